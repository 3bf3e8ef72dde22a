//! systemd's side of the daemons, without systemd as PID 1 (as on this machine): the unit files
//! of `deploy/systemd/` pass `systemd-analyze verify`, and `pico worker run` speaks sd_notify to
//! a socket the test holds in systemd's place: READY=1 once it serves, WATCHDOG=1 at half the
//! watchdog's interval, RELOADING=1 and READY=1 again across a SIGUSR2 re-exec (the unit's
//! ExecReload), STOPPING=1 at SIGTERM.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use testkit::systemd::{copy_units, verify, NotifySocket};

use crate::pico;

/// The unit files in this checkout.
fn units() -> Vec<PathBuf> {
    let dir = testkit::repo_root().join("deploy/systemd");
    let mut units: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    units.sort();
    units
}

/// `systemd-analyze verify` on every unit, their binaries pointed at this build's `pico` and
/// the garage here (it checks that each command exists; the installed package's units are
/// verified as installed by `package::the_package_installs_serves_the_quickstart_and_purges`).
#[test]
fn the_units_pass_systemd_analyze_verify() {
    let units = units();
    let names: Vec<_> = units
        .iter()
        .map(|u| u.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for name in [
        "pico-worker.service",
        "pico-hub.service",
        "pico-garage.service",
        "pico-worker.socket",
    ] {
        assert!(names.iter().any(|n| n == name), "{name} missing: {names:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let pico = PathBuf::from(env!("CARGO_BIN_EXE_pico"));
    let garage = testkit::garage::binary();
    let copies = copy_units(
        &units,
        dir.path(),
        &[("/usr/bin/pico", &pico), ("/usr/local/bin/garage", &garage)],
    );
    verify(&copies);
}

/// A worker started with `NOTIFY_SOCKET` and `WATCHDOG_USEC`, as systemd starts a
/// `Type=notify` unit with `WatchdogSec=`, says READY=1 once its socket serves, pings the
/// watchdog at half the interval, says RELOADING=1 then READY=1 again (the same process) across
/// a SIGUSR2 re-exec, and STOPPING=1 at SIGTERM; no tenant sees the variables.
#[test]
fn a_worker_tells_systemd_when_it_is_ready_reloads_and_stops() {
    let _serial = testkit::criu_lock();
    let p = pico();
    let mut notify = NotifySocket::bind();
    let socket = notify.path().to_str().unwrap().to_string();
    let started = Instant::now();
    let mut worker = p.start_worker_with_env(&[
        ("NOTIFY_SOCKET", &socket),
        // 0.4 s: a ping every 0.2 s.
        ("WATCHDOG_USEC", "400000"),
    ]);
    let pid = worker.pid().unwrap();
    let ready = notify.expect("READY=1", Duration::from_secs(30));
    assert!(ready.contains("STATUS=serving 0 tenants"), "{ready}");
    assert!(p.socket().exists(), "READY=1 before the API's socket");
    eprintln!(
        "READY=1 {} ms after the start",
        started.elapsed().as_millis()
    );
    let pinged = Instant::now();
    notify.expect("WATCHDOG=1", Duration::from_secs(2));
    notify.expect("WATCHDOG=1", Duration::from_secs(2));
    assert!(
        pinged.elapsed() < Duration::from_millis(1500),
        "two pings took {:?}",
        pinged.elapsed()
    );

    // A tenant inherits none of systemd's variables.
    let port = crate::add_counter(&p, "c");
    let tenant_pid = crate::tenant(&p, "c")["pid"].as_u64().unwrap();
    let environ = std::fs::read(format!("/proc/{tenant_pid}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    for var in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
        assert!(!environ.contains(var), "the tenant sees {var}");
    }

    // The unit's ExecReload: kill -USR2 $MAINPID.
    let signalled = std::process::Command::new("kill")
        .args(["-USR2", &pid.to_string()])
        .status()
        .unwrap();
    assert!(signalled.success());
    let reloading = notify.expect("RELOADING=1", Duration::from_secs(10));
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    let again = Instant::now();
    notify.expect("READY=1", Duration::from_secs(30));
    eprintln!(
        "READY=1 again {} ms after RELOADING=1",
        again.elapsed().as_millis()
    );
    assert_eq!(worker.pid(), Some(pid));
    assert!(!worker.exited_within(Duration::ZERO), "the same process");
    // The new image pings the same watchdog.
    notify.expect("WATCHDOG=1", Duration::from_secs(2));
    assert_eq!(crate::tenant(&p, "c")["pid"].as_u64(), Some(tenant_pid));
    assert_eq!(testkit::net::http_get(port, "/inc").unwrap(), "1");
    p.ok(&["tenant", "rm", "c"]);

    // systemctl stop: SIGTERM to the main process.
    // SAFETY: kill(2) on the worker this test started.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    notify.expect("STOPPING=1", Duration::from_secs(10));
    assert!(worker.exited_within(Duration::from_secs(30)));
}
