//! A real single-node Garage (S3) server on loopback for tests, started through `deploy/garage.sh`.
//!
//! Tests of the S3 cold tier run against this, never against a mock. A test that asks for Garage
//! and cannot get it fails with the reason (run `deploy/setup.sh`): it never skips silently.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A running Garage under a temporary directory; stopped (and its data removed) on drop.
pub struct Garage {
    dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// The `[cold]` section of `pico.toml` that `deploy/garage.sh` printed.
    pub cold_toml: String,
}

/// `deploy/garage.sh` in this checkout.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/garage.sh")
}

fn run_script(cmd: &str, dir: &Path) -> Result<String, String> {
    let out = Command::new("bash")
        .arg(script())
        .arg(cmd)
        .arg(dir)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script().display()))?;
    if !out.status.success() {
        return Err(format!(
            "deploy/garage.sh {cmd} {} failed ({}): {}",
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    String::from_utf8(out.stdout).map_err(|e| e.to_string())
}

/// The quoted value of `key = "value"` in a TOML section.
fn toml_value(toml: &str, key: &str) -> Option<String> {
    toml.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
    })
}

impl Garage {
    /// Starts a fresh Garage with its bucket and key. Panics with the reason when it cannot.
    pub fn start() -> Garage {
        let dir = tempfile::Builder::new()
            .prefix("pico-garage-")
            .tempdir()
            .expect("temp dir for Garage");
        let cold_toml = run_script("start", dir.path())
            .unwrap_or_else(|e| panic!("Garage is needed for this test: {e}"));
        let get = |k: &str| {
            toml_value(&cold_toml, k)
                .unwrap_or_else(|| panic!("no {k} in garage.sh output:\n{cold_toml}"))
        };
        Garage {
            endpoint: get("endpoint"),
            region: get("region"),
            bucket: get("bucket"),
            access_key_id: get("access_key_id"),
            secret_access_key: get("secret_access_key"),
            cold_toml,
            dir,
        }
    }

    /// Stops the server (its data stays): the endpoint then refuses connections.
    pub fn stop(&self) {
        run_script("stop", self.dir.path()).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Starts it again after [`Garage::stop`], at the same endpoint with the same data.
    pub fn restart(&self) {
        run_script("start", self.dir.path()).unwrap_or_else(|e| panic!("{e}"));
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        if let Err(e) = run_script("stop", self.dir.path()) {
            eprintln!("{e}");
        }
    }
}
