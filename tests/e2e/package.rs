//! The Debian package on this machine: built (`deploy/package.sh`, cargo-deb), installed with
//! apt-get, its worker started the way `pico-worker.service` starts it, the quickstart run
//! against that installed worker, then removed and purged with nothing left behind.
//!
//! systemd is not PID 1 here, so the test plays its part: it reads `ExecStart=`,
//! `ExecReload=`, `Environment=`, `CapabilityBoundingSet=` and `LimitNOFILE=` from the installed
//! unit and runs that command line with systemd's environment for a service (PATH, `/` as the
//! working directory, `NOTIFY_SOCKET` and `WATCHDOG_USEC`) under `setpriv --bounding-set` and
//! `prlimit`, listening for READY=1 on the notification socket. The remaining settings (Delegate,
//! KillMode, OOMPolicy, TasksMax, WatchdogSec's restart, Restart=) need systemd itself.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use testkit::package::{self, Installed};
use testkit::systemd::{verify, NotifySocket, ServiceUnit};

const WORKER_UNIT: &str = "/lib/systemd/system/pico-worker.service";
const HUB_UNIT: &str = "/lib/systemd/system/pico-hub.service";

/// The PATH systemd gives a system service (`systemd.exec(5)`, "Environment variables in
/// spawned processes").
const SERVICE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The installed worker, started as its unit says; SIGTERM (the unit's stop) on drop.
struct Service {
    child: Option<Child>,
    log: std::path::PathBuf,
}

impl Service {
    fn start(unit: &ServiceUnit, notify: &NotifySocket, log: &Path) -> Service {
        let exec = unit.command("ExecStart", None);
        let mut command = Command::new("setpriv");
        if let Some(set) = unit.bounding_set_for_setpriv() {
            command.arg(format!("--bounding-set={set}"));
        }
        command.arg("--").arg("prlimit");
        if let [limit] = unit.all("LimitNOFILE")[..] {
            if may_raise_hard_limits() {
                command.arg(format!("--nofile={limit}"));
            } else {
                eprintln!(
                    "LimitNOFILE={limit} NOT APPLIED: this machine's bounding set lacks \
                     CAP_SYS_RESOURCE, so no process here (systemd neither) may raise a hard limit"
                );
            }
        }
        let file = std::fs::File::create(log).unwrap();
        command
            .arg("--")
            .args(&exec)
            .env_clear()
            .env("PATH", SERVICE_PATH)
            .env("LANG", "C.UTF-8")
            .envs(unit.environment())
            .env("NOTIFY_SOCKET", notify.path())
            // WatchdogSec=, in microseconds.
            .env("WATCHDOG_USEC", watchdog_usec(unit).to_string())
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        // setpriv and prlimit exec the worker: its pid is the child's, as MAINPID would be.
        let child = command.spawn().expect("setpriv and prlimit (util-linux)");
        Service {
            child: Some(child),
            log: log.to_path_buf(),
        }
    }

    /// Waits for `line` from the worker on `notify`; panics with its log if it exits first.
    fn expect(&mut self, notify: &mut NotifySocket, line: &str, within: Duration) -> String {
        let log = self.log.clone();
        let child = self.child.as_mut().unwrap();
        notify.expect_while(line, within, || match child.try_wait() {
            Ok(None) => Ok(()),
            status => Err(format!(
                "the worker exited ({status:?}):\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )),
        })
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `systemctl stop` with `KillMode=process`: SIGTERM to the main process, which may take
    /// `TimeoutStopSec=`; here at most `within`.
    fn stop(&mut self, within: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        // SAFETY: kill(2) on the child this test started, not yet reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if started.elapsed() > within {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the worker did not stop within {within:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop(Duration::from_secs(120));
        }
    }
}

/// Whether this process may raise a hard resource limit (CAP_SYS_RESOURCE, 24, in its
/// bounding set: some containers drop it).
fn may_raise_hard_limits() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << 24) != 0)
}

fn watchdog_usec(unit: &ServiceUnit) -> u64 {
    let value = unit.one("WatchdogSec");
    let secs: u64 = value
        .strip_suffix('s')
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("WatchdogSec={value}: seconds expected"));
    secs * 1_000_000
}

/// Builds the package, installs it, checks what it put where, starts the worker as its unit
/// does, reloads it as `systemctl reload` does, runs the quickstart against it, stops it, and
/// removes then purges the package: nothing of it remains. The guards stop the worker and purge
/// the package when any step fails.
#[test]
fn the_package_installs_serves_the_quickstart_and_purges() {
    let _serial = testkit::criu_lock();
    testkit::require_root();
    let deb = package::build();
    let mut installed = Installed::install(&deb);

    // What the package installed.
    for path in [
        "/usr/bin/pico",
        WORKER_UNIT,
        HUB_UNIT,
        "/lib/systemd/system/pico-garage.service",
        "/usr/share/doc/pico/examples/pico-worker.socket",
        "/usr/share/doc/pico/systemd.md",
    ] {
        assert!(Path::new(path).exists(), "{path} not installed");
    }
    let conffiles = package::run_ok("dpkg-query", &["-W", "-f=${Conffiles}", package::NAME]);
    assert!(
        String::from_utf8_lossy(&conffiles.stdout).contains("/etc/pico/pico.toml"),
        "not a conffile"
    );
    let config = std::fs::metadata("/etc/pico/pico.toml").unwrap();
    assert_eq!(config.permissions().mode() & 0o777, 0o640);
    let group = package::run_ok("getent", &["group", "pico"]);
    let gid: u32 = String::from_utf8_lossy(&group.stdout)
        .split(':')
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!((config.uid(), config.gid()), (0, gid), "root:pico");
    let home = std::fs::metadata("/var/lib/pico").unwrap();
    assert!(home.is_dir() && home.permissions().mode() & 0o777 == 0o700);
    assert!(
        Path::new("/etc/systemd/system/multi-user.target.wants/pico-worker.service").exists(),
        "the worker is enabled at boot"
    );
    // The installed units as they are, their binaries installed.
    verify(&[WORKER_UNIT.into(), HUB_UNIT.into()]);
    // The shipped configuration passes the installed binary's own check.
    package::run_ok("/usr/bin/pico", &["config", "check", "/etc/pico/pico.toml"]);
    let version = package::run_ok("/usr/bin/pico", &["--version"]);
    eprintln!(
        "installed {}",
        String::from_utf8_lossy(&version.stdout).trim()
    );

    // Started as the unit starts it.
    let unit = ServiceUnit::read(Path::new(WORKER_UNIT));
    assert_eq!(unit.one("Type"), "notify");
    assert_eq!(unit.one("KillMode"), "process");
    assert_eq!(unit.one("Delegate"), "yes");
    let logs = tempfile::tempdir().unwrap();
    let mut notify = NotifySocket::bind();
    let started = Instant::now();
    let mut service = Service::start(&unit, &notify, &logs.path().join("worker.log"));
    let ready = service.expect(&mut notify, "READY=1", Duration::from_secs(120));
    eprintln!(
        "the installed worker said READY=1 after {} ms: {ready:?}",
        started.elapsed().as_millis()
    );
    let pid = service.pid();
    // CapabilityBoundingSet= applied: CAP_SYS_MODULE (16) is out of it.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let bounding = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap();
    assert_eq!(bounding & (1 << 16), 0, "CapBnd {bounding:x}");
    // The first ping goes at once, the next after half of WatchdogSec.
    if !notify.seen("WATCHDOG=1") {
        service.expect(&mut notify, "WATCHDOG=1", Duration::from_secs(40));
    }

    // systemctl reload: the unit's ExecReload, a re-exec in place.
    let reload = unit.command("ExecReload", Some(pid));
    let status = Command::new(&reload[0])
        .args(&reload[1..])
        .status()
        .unwrap();
    assert!(status.success(), "{reload:?}");
    service.expect(&mut notify, "RELOADING=1", Duration::from_secs(20));
    service.expect(&mut notify, "READY=1", Duration::from_secs(60));
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "the same process"
    );

    // The quickstart, against the installed service.
    let quickstart = Instant::now();
    let out = Command::new("bash")
        .arg(testkit::repo_root().join("deploy/quickstart.sh"))
        .env("PICO_BIN", "/usr/bin/pico")
        .env("PICO_WORKER_HOME", "/var/lib/pico")
        .env("PICO_CONFIG", "/etc/pico/pico.toml")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the quickstart failed ({}):\n{stdout}\n{}\nworker:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        service.log()
    );
    assert!(
        stdout.contains("hello from redis, back from the page store (1001 keys)"),
        "{stdout}"
    );
    eprintln!(
        "the quickstart ran against the installed worker in {:.1} s:\n{stdout}",
        quickstart.elapsed().as_secs_f64()
    );

    // systemctl stop.
    let status = service.stop(Duration::from_secs(120));
    assert!(status.success(), "{status}:\n{}", service.log());
    if !notify.seen("STOPPING=1") {
        notify.expect("STOPPING=1", Duration::from_secs(1));
    }
    let log = service.log();
    assert!(log.contains("worker ready"), "{log}");

    // dpkg -r keeps the configuration and the data; --purge nothing.
    installed.remove();
    for gone in ["/usr/bin/pico", WORKER_UNIT, HUB_UNIT] {
        assert!(!Path::new(gone).exists(), "{gone} left by dpkg -r");
    }
    assert!(
        Path::new("/etc/pico/pico.toml").exists(),
        "a conffile stays until the purge"
    );
    assert!(
        Path::new("/var/lib/pico").exists(),
        "the data stays until the purge"
    );
    installed.purge();
    assert_eq!(
        package::leftovers(),
        Vec::<&str>::new(),
        "left by the purge"
    );
    assert!(!package::known_to_dpkg(), "dpkg still knows the package");
    let group = Command::new("getent")
        .args(["group", "pico"])
        .output()
        .unwrap();
    assert!(!group.status.success(), "the group pico is left");
}
