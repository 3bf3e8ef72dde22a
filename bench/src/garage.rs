//! A Garage (S3) server for benchmarks, started through `deploy/garage.sh` like the tests' one,
//! but failing with errors rather than panics. Stopped when dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;

pub struct GarageServer {
    script: PathBuf,
    dir: PathBuf,
    /// The `[cold]` section `deploy/garage.sh` printed.
    pub cold_toml: String,
    /// Garage's S3 endpoint.
    pub s3: SocketAddr,
}

impl GarageServer {
    pub fn start(repo: &Path, dir: &Path) -> Result<GarageServer, Error> {
        let script = repo.join("deploy/garage.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg("start")
            .arg(dir)
            .output()
            .map_err(|e| Error::Step("deploy/garage.sh".into(), e.to_string()))?;
        if !out.status.success() {
            return Err(Error::Step(
                "deploy/garage.sh start".into(),
                String::from_utf8_lossy(&out.stderr).to_string(),
            ));
        }
        let cold_toml = String::from_utf8_lossy(&out.stdout).to_string();
        let s3 = cold_toml
            .lines()
            .find_map(|l| l.trim().strip_prefix("endpoint"))
            .and_then(|v| v.split("://").nth(1))
            .map(|v| v.trim_end_matches(['"', '/']).to_string())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                Error::Step(
                    "deploy/garage.sh".into(),
                    format!("no endpoint in {cold_toml:?}"),
                )
            })?;
        Ok(GarageServer {
            script,
            dir: dir.to_path_buf(),
            cold_toml,
            s3,
        })
    }

    /// The `[cold]` section with the endpoint moved to `via` (e.g. a latency proxy).
    pub fn cold_toml_via(&self, via: SocketAddr) -> String {
        self.cold_toml
            .replace(&format!("http://{}", self.s3), &format!("http://{via}"))
    }
}

impl Drop for GarageServer {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(&self.script)
            .arg("stop")
            .arg(&self.dir)
            .output();
    }
}
