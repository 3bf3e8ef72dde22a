//! A real Garage (S3) server on loopback for tests, started through `deploy/garage.sh`: one node,
//! or a cluster of nodes with a replication factor of their number.
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
    /// Nodes of a cluster (`None`: one node).
    nodes: Option<usize>,
}

/// `deploy/garage.sh` in this checkout.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/garage.sh")
}

/// The garage binary, found as `deploy/garage.sh` finds it: `$GARAGE_BIN`, `garage` on PATH,
/// `~/.cargo/bin/garage` (deploy/setup.sh installs it there).
pub fn binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("GARAGE_BIN") {
        return PathBuf::from(bin);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("garage"))
        .find(|bin| bin.is_file());
    let home = std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo/bin/garage"));
    on_path.or(home.filter(|bin| bin.is_file())).expect(
        "garage not found: run deploy/setup.sh (it installs Garage with cargo) or set GARAGE_BIN",
    )
}

fn run_script(cmd: &str, dir: &Path) -> Result<String, String> {
    run_script_with(cmd, dir, None, &[])
}

/// `deploy/garage.sh CMD DIR [ARG]` with `env` set: its stdout, or why it failed.
fn run_script_with(
    cmd: &str,
    dir: &Path,
    arg: Option<usize>,
    env: &[(&str, &str)],
) -> Result<String, String> {
    let out = Command::new("bash")
        .envs(env.iter().copied())
        .arg(script())
        .arg(cmd)
        .arg(dir)
        .args(arg.map(|a| a.to_string()))
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

/// The cold tiers a store test runs on, each without a local tier (every page from the cold
/// tier): a directory under `tmp/dir`, and a fresh Garage (returned beside it: it must outlive
/// the store) under `tmp/s3`.
pub fn cold_backends(tmp: &Path) -> Vec<(pagestore::StoreConfig, Option<Garage>)> {
    let mut dir = pagestore::StoreConfig::embedded(&tmp.join("dir"));
    dir.local.enabled = false;
    let g = Garage::start();
    let mut s3 = pagestore::StoreConfig::embedded(&tmp.join("s3"));
    s3.local.enabled = false;
    s3.cold = pagestore::config::ColdConfig::S3(g.s3_config(None));
    vec![(dir, None), (s3, Some(g))]
}

impl Garage {
    /// The store's `[cold]` S3 settings for this Garage's bucket and key, under `prefix`.
    pub fn s3_config(&self, prefix: Option<&str>) -> pagestore::config::S3Config {
        pagestore::config::S3Config {
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            bucket: self.bucket.clone(),
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
            prefix: prefix.map(str::to_string),
            max_attempts: None,
        }
    }

    /// Starts a fresh Garage with its bucket and key. Panics with the reason when it cannot.
    pub fn start() -> Garage {
        Garage::started(None)
    }

    /// Starts a fresh cluster of `nodes` Garage nodes (replication factor `nodes`, one zone
    /// each), its bucket and key made through node 1, whose endpoint this names.
    pub fn start_cluster(nodes: usize) -> Garage {
        Garage::started(Some(nodes))
    }

    /// Starts a fresh cluster of a node on each of `hosts` (its namespace and address), as
    /// [`Garage::start_cluster`]; the endpoint is node 1's, on its host.
    pub fn start_cluster_on(hosts: &[crate::netlab::NetHost]) -> Garage {
        let list: Vec<String> = hosts
            .iter()
            .map(|h| format!("{}={}", h.netns, h.addr))
            .collect();
        Garage::started_with(Some(hosts.len()), &[("GARAGE_HOSTS", &list.join(" "))])
    }

    fn started(nodes: Option<usize>) -> Garage {
        Garage::started_with(nodes, &[])
    }

    fn started_with(nodes: Option<usize>, env: &[(&str, &str)]) -> Garage {
        let dir = tempfile::Builder::new()
            .prefix("pico-garage-")
            .tempdir()
            .expect("temp dir for Garage");
        let started = match nodes {
            None => run_script("start", dir.path()),
            Some(n) => run_script_with("cluster", dir.path(), Some(n), env),
        };
        let cold_toml = started.unwrap_or_else(|e| panic!("Garage is needed for this test: {e}"));
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
            nodes,
            dir,
        }
    }

    /// Stops node `k` (from 1) of a cluster; the others go on.
    pub fn stop_node(&self, k: usize) {
        run_script_with("stop-node", self.dir.path(), Some(k), &[])
            .unwrap_or_else(|e| panic!("{e}"));
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
        let stop = if self.nodes.is_some() {
            "stop-cluster"
        } else {
            "stop"
        };
        if let Err(e) = run_script(stop, self.dir.path()) {
            eprintln!("{e}");
        }
    }
}
