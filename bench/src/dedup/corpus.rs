//! Building the corpus: real CRIU checkpoints of real tenants, K generations each.
//!
//! CRIU is driven directly through `worker::criu` rather than through a `pico worker`: every
//! baseline needs the raw image directories on disk, which the worker deletes once a checkpoint
//! is committed, and going through the worker would put every checkpoint through our store (and a
//! lazy FUSE restore) before the baselines see it. The flow per tenant is still the worker's:
//! launch (optionally deterministic, exactly as `pico tenant add --deterministic`), traffic,
//! `criu dump`, `criu restore`, traffic, `criu dump`, ...

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::debug;
use worker::criu::Criu;
use worker::process::process_alive;

use super::kinds::{self, Kind, Layout};
use crate::error::{Error, Result};

/// One checkpoint of the corpus: a CRIU image directory.
#[derive(Clone, Debug, Serialize)]
pub struct Checkpoint {
    pub layout: Layout,
    pub kind: Kind,
    pub tenant: String,
    pub generation: u32,
    #[serde(skip)]
    pub dir: PathBuf,
    /// Bytes of all its files.
    pub bytes: u64,
}

pub struct Corpus {
    pub checkpoints: Vec<Checkpoint>,
    pub build_s: f64,
}

/// Waits for `pid` (gone after a dump) and reaps any other exited orphans.
fn reap(pid: u32) {
    // SAFETY: waitpid with a null status pointer only reaps; no memory is touched.
    unsafe { libc::waitpid(pid as i32, std::ptr::null_mut(), 0) };
    reap_orphans();
}

/// Reaps every exited orphan this process has adopted (it is their subreaper).
fn reap_orphans() {
    // SAFETY: waitpid with a null status pointer only reaps; no memory is touched.
    unsafe { while libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) > 0 {} }
}

/// A live tenant tree. Dropped before its dump (an error, or an interrupted run), it is killed
/// and reaped, so the benchmark never leaves a tenant running.
struct Live {
    pid: u32,
    armed: bool,
}

impl Live {
    fn new(pid: u32) -> Live {
        Live { pid, armed: true }
    }

    /// The dump ended the tree: nothing left to kill.
    fn dumped(mut self) {
        self.armed = false;
        reap(self.pid);
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if self.armed {
            // Its whole session and PID namespace (it was started as `launch` starts tenants).
            worker::process::kill_tree_blocking(self.pid);
            reap_orphans();
        }
    }
}

fn wait_listening(port: u16, pid: u32, limit: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if worker::readiness::listens(port, Duration::from_secs(1)) {
            return true;
        }
        if !process_alive(pid) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Apparent size of every file under `dir`.
pub fn tree_bytes(dir: &Path) -> Result<u64> {
    Ok(pagestore::local::dir_bytes(dir)?)
}

/// One tenant being checkpointed.
struct Run<'a> {
    criu: &'a Criu,
    layout: Layout,
    kind: Kind,
    name: String,
    root: PathBuf,
    port: u16,
    seed: u64,
}

impl Run<'_> {
    fn log(&self) -> PathBuf {
        self.root.join("tenant.log")
    }

    fn fail(&self, reason: String) -> Error {
        Error::Tenant {
            tenant: self.name.clone(),
            reason,
            log: self.log(),
        }
    }

    fn start(&self) -> Result<Live> {
        let cwd = self.root.join("cwd");
        std::fs::create_dir_all(&cwd).map_err(|e| Error::io(&cwd, e))?;
        let argv = kinds::prepare(self.kind, &cwd, self.port, self.seed)?;
        let log_path = self.log();
        let log = std::fs::File::create(&log_path).map_err(|e| Error::io(&log_path, e))?;
        let log_err = log.try_clone().map_err(|e| Error::io(&log_path, e))?;
        let mut cmd = Command::new(&argv[0]);
        // The same environment for every tenant: only the layout differs between the two halves.
        cmd.args(&argv[1..])
            .current_dir(&cwd)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", "/root")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        worker::launch::as_tenant(&mut cmd, self.layout == Layout::Deterministic, None, None);
        let child =
            worker::launch::spawn_in_own_pid_namespace(move || cmd.spawn()).map_err(|e| {
                Error::ToolMissing {
                    tool: argv[0].clone(),
                    source: e,
                }
            })?;
        // Reaped with waitpid after its dump, like the restored generations.
        let live = Live::new(child.id());
        drop(child);
        if !wait_listening(self.port, live.pid, Duration::from_secs(20)) {
            return Err(self.fail(format!("did not listen on port {}", self.port)));
        }
        Ok(live)
    }

    async fn dump(&self, live: Live, generation: u32) -> Result<Checkpoint> {
        let images = self.root.join(format!("gen-{generation}"));
        let work = self.root.join(format!("criu/dump-{generation}"));
        for d in [&images, &work] {
            std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
        }
        self.criu
            .dump(live.pid, &images, &work, None, None)
            .await
            .map_err(|e| Error::Criu {
                tenant: self.name.clone(),
                source: Box::new(e),
            })?;
        live.dumped();
        Ok(Checkpoint {
            layout: self.layout,
            kind: self.kind,
            tenant: self.name.clone(),
            generation,
            bytes: tree_bytes(&images)?,
            dir: images,
        })
    }

    async fn restore(&self, generation: u32) -> Result<Live> {
        let images = self.root.join(format!("gen-{generation}"));
        let work = self.root.join(format!("criu/restore-{generation}"));
        std::fs::create_dir_all(&work).map_err(|e| Error::io(&work, e))?;
        let live = Live::new(
            self.criu
                .restore(&images, &work, false, Default::default(), false)
                .await
                .map_err(|e| Error::Criu {
                    tenant: self.name.clone(),
                    source: Box::new(e),
                })?,
        );
        if !wait_listening(self.port, live.pid, Duration::from_secs(20)) {
            return Err(self.fail(format!("restored tree does not listen on {}", self.port)));
        }
        Ok(live)
    }

    /// Launch, then K times: traffic and dump (restoring between dumps).
    async fn checkpoints(&self, generations: u32) -> Result<Vec<Checkpoint>> {
        let live = self.start()?;
        kinds::populate(self.kind, self.port, self.seed)?;
        kinds::traffic(self.kind, self.port, self.seed, 1)?;
        let mut out = vec![self.dump(live, 1).await?];
        for generation in 2..=generations {
            let live = self.restore(generation - 1).await?;
            kinds::traffic(self.kind, self.port, self.seed, generation)?;
            out.push(self.dump(live, generation).await?);
        }
        debug!(tenant = %self.name, "checkpointed");
        Ok(out)
    }
}

/// Checkpoints `tenants` tenants of every kind in both layouts, `generations` times each, under
/// `root`. `step` is called after each tenant.
pub async fn build(
    criu: &Criu,
    root: &Path,
    tenants: u32,
    generations: u32,
    mut step: impl FnMut(&str),
) -> Result<Corpus> {
    let started = Instant::now();
    let mut checkpoints = Vec::new();
    for layout in Layout::ALL {
        for kind in Kind::ALL {
            for i in 0..tenants {
                let name = format!("{}-{}-{i:02}", layout.name(), kind.name());
                let run = Run {
                    criu,
                    layout,
                    kind,
                    root: root.join(&name),
                    name: name.clone(),
                    port: crate::net::free_port()?,
                    // The same content for tenant i in both layouts: only the layout differs.
                    seed: 1000 * (kind as u64 + 1) + u64::from(i),
                };
                checkpoints.extend(run.checkpoints(generations).await?);
                step(&name);
            }
        }
    }
    Ok(Corpus {
        checkpoints,
        build_s: started.elapsed().as_secs_f64(),
    })
}
