//! The Debian package, built and installed on this machine for a test: built by
//! `deploy/package.sh` (or taken from `PICO_DEB`), installed with apt-get, and purged when the
//! guard drops, whatever happened, so that a failed test leaves nothing installed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

/// The package's name.
pub const NAME: &str = "pico";

/// Everything the package puts on a machine, or its scripts and services make: none may remain
/// after a purge.
pub const FOOTPRINT: &[&str] = &[
    "/usr/bin/pico",
    "/lib/systemd/system/pico-worker.service",
    "/lib/systemd/system/pico-hub.service",
    "/lib/systemd/system/pico-garage.service",
    "/usr/share/doc/pico",
    "/etc/pico",
    "/var/lib/pico",
    "/var/lib/pico-hub",
    "/var/lib/pico-garage",
    "/etc/systemd/system/multi-user.target.wants/pico-worker.service",
];

/// The package file: `$PICO_DEB` when set (built beforehand by `deploy/package.sh`), else built
/// now into the target directory (an incremental release build: minutes). Prints how long it took.
pub fn build() -> PathBuf {
    if let Some(deb) = std::env::var_os("PICO_DEB") {
        return PathBuf::from(deb);
    }
    let started = Instant::now();
    let out = Command::new("bash")
        .arg(crate::repo_root().join("deploy/package.sh"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "deploy/package.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deb = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .rfind(|l| l.ends_with(".deb"))
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "deploy/package.sh named no .deb:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
    eprintln!(
        "built {} in {:.1} s",
        deb.display(),
        started.elapsed().as_secs_f64()
    );
    deb
}

/// Whether the package is installed (or half-installed, or removed with its configuration kept).
pub fn known_to_dpkg() -> bool {
    dpkg_query_status().is_some_and(|s| !s.contains("not-installed"))
}

fn dpkg_query_status() -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", NAME])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What of [`FOOTPRINT`] exists now.
pub fn leftovers() -> Vec<&'static str> {
    FOOTPRINT
        .iter()
        .copied()
        .filter(|p| Path::new(p).symlink_metadata().is_ok())
        .collect()
}

/// Runs a command to its end; panics with its output when it fails.
pub fn run_ok(program: &str, args: &[&str]) -> Output {
    let started = Instant::now();
    let out = Command::new(program)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "{program} {} took {:.1} s",
        args.join(" "),
        started.elapsed().as_secs_f64()
    );
    out
}

/// The package installed from `deb`; purged when dropped.
pub struct Installed {
    purged: bool,
}

impl Installed {
    /// Installs `deb` with `apt-get install ./FILE` (its dependencies from the archive). Refuses
    /// to run on a machine where the package, or anything it would own, is already there: the
    /// guard purges, and must never take an operator's installation with it.
    pub fn install(deb: &Path) -> Installed {
        let occupied: Vec<_> = leftovers()
            .into_iter()
            .filter(|p| std::fs::read_dir(p).map_or(true, |mut d| d.next().is_some()))
            .collect();
        assert!(
            !known_to_dpkg() && occupied.is_empty(),
            "{NAME} is already installed here, or its files exist ({occupied:?}): this test \
             installs and purges the package, so it runs only where neither is (an empty \
             directory holds nothing and is allowed)"
        );
        let deb = std::path::absolute(deb).unwrap();
        let guard = Installed { purged: false };
        run_ok(
            "apt-get",
            &[
                "install",
                "-y",
                "--no-install-recommends",
                deb.to_str().unwrap(),
            ],
        );
        guard
    }

    /// `dpkg -r`: the configuration and the data stay.
    pub fn remove(&self) {
        run_ok("dpkg", &["-r", NAME]);
    }

    /// `dpkg --purge`: nothing stays.
    pub fn purge(&mut self) {
        run_ok("dpkg", &["--purge", NAME]);
        self.purged = true;
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        if !self.purged {
            let _ = Command::new("dpkg")
                .args(["--purge", NAME])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status();
        }
    }
}
