//! `pico bench restore`: time from the start of a restore to a tenant's first correct answer,
//! measured at a real client, for several apps and restore modes in one run.
//!
//! Modes:
//! - `criu-eager`: plain CRIU, `criu restore` of image files on tmpfs (the baseline an operator
//!   has without us), the app in the namespaces and cgroup a worker gives a tenant;
//! - `lazy-local`: `pico tenant swap-in` with the pages in the local tier (ActiveSet on);
//! - `lazy-cold`: the same after emptying the worker's caches, so every page comes from the cold
//!   tier, without the ActiveSet;
//! - `lazy-cold-activeset`: the same with the ActiveSet, installed eagerly (the served pagemaps
//!   make its pages non-lazy, so `criu restore` installs them in bulk);
//! - `lazy-cold-activeset-prefetch`: the same with the ActiveSet prefetched into memory instead,
//!   its pages left to fault in one userfaultfd fault each (served from memory);
//! - `lazy-local-first`, `lazy-cold-first`: a tenant's first wake-up, from the local tier or the
//!   cold tier: a fresh tenant per sample, never restored before, so no ActiveSet yet and
//!   learning on ([`first`]).
//!
//! Each mode gets one unmeasured warm-up cycle (which also teaches the ActiveSet, in the
//! repeated modes). Besides the time to the first answer, each sample counts the cold-tier bytes
//! and sequential round trips (waves of reads, `pico store counters`' `cold_waves`) before it.
//!
//! **The same idle time before every restore.** Each measured restore starts `idle` (default
//! 1 s) after its checkpoint started (`criu dump`, or the swap-out), in every mode: a
//! swapped-out tenant is idle before a request wakes it, and on a VM that reports free memory to
//! its host (this one does) a restore into memory freed a moment before is faster than one into
//! memory freed longer ago. Measured here with plain CRIU: the counter restored right after its
//! dump answered in 16-17 ms, 500 ms after it in 26-27 ms (nginx 12 and 22 ms). A swap-out to
//! S3 through the latency proxy takes ~0.5 s, so timing each restore right after its checkpoint
//! favoured `criu-eager` by ~10 ms.
//!
//! **The background recompression.** After each swap-out the worker rewrites the new packs
//! dense in the background (`pagestore::recompress`): it GETs them from the cold tier and
//! compresses them on the same 2 cores. In a 2-run smoke (counter, node-map, py-dict) it was
//! still running at the start or the first answer of every sample of every lazy mode
//! (`recompressing_share` 1.0): its reads then count in the swap-in's cold bytes and round
//! trips (a node-map `lazy-local-first` read 8 MB "from the cold tier" before its first answer,
//! 0 without it) and its CPU competes with the restore. A tenant idle for minutes would find it
//! done; `settle` (`--settle`, off by default) waits for its end before each measured swap-in,
//! and the idle time then grows (`idle_ms` with it: 1.1-3.2 s for the repeated modes, whose
//! swap-out alone often outlasts 1 s, 1.5-8.6 s for the fresh tenants of the first wake-up
//! modes, against 1.0 s for `criu-eager`). It also waits for the worker's caching of new pages
//! in the local tier (a thread at nice 19): until that ends, a page the memory tier had no room
//! for (a large heap's fresh tenant writes 270 MB of them) is read from the cold tier in a
//! local mode.

pub mod apps;
mod first;
mod lazy;
pub mod report;
mod tally;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;
use worker::cgroup::StandaloneCgroup;
use worker::protocol::{Client, Request};

pub use apps::App;

use crate::net::free_port;
use crate::Error;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Mode {
    CriuEager,
    LazyLocal,
    LazyCold,
    LazyColdActiveSet,
    LazyColdActiveSetPrefetch,
    LazyLocalFirst,
    LazyColdFirst,
}

pub const ALL_MODES: [Mode; 7] = [
    Mode::CriuEager,
    Mode::LazyLocal,
    Mode::LazyCold,
    Mode::LazyColdActiveSet,
    Mode::LazyColdActiveSetPrefetch,
    Mode::LazyLocalFirst,
    Mode::LazyColdFirst,
];

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::CriuEager => "criu-eager",
            Mode::LazyLocal => "lazy-local",
            Mode::LazyCold => "lazy-cold",
            Mode::LazyColdActiveSet => "lazy-cold-activeset",
            Mode::LazyColdActiveSetPrefetch => "lazy-cold-activeset-prefetch",
            Mode::LazyLocalFirst => "lazy-local-first",
            Mode::LazyColdFirst => "lazy-cold-first",
        }
    }
    pub fn parse(s: &str) -> Option<Mode> {
        ALL_MODES.into_iter().find(|m| m.name() == s)
    }
    pub fn cold(self) -> bool {
        matches!(
            self,
            Mode::LazyCold
                | Mode::LazyColdActiveSet
                | Mode::LazyColdActiveSetPrefetch
                | Mode::LazyColdFirst
        )
    }

    /// A tenant's first wake-up: a fresh tenant per sample ([`first`]).
    pub fn first(self) -> bool {
        matches!(self, Mode::LazyLocalFirst | Mode::LazyColdFirst)
    }

    /// How the worker installs the ActiveSet in this mode (`None`: its configured default).
    fn install(self) -> Option<worker::ActiveSetInstall> {
        match self {
            Mode::LazyColdActiveSet => Some(worker::ActiveSetInstall::Eager),
            Mode::LazyColdActiveSetPrefetch => Some(worker::ActiveSetInstall::Prefetch),
            _ => None,
        }
    }
}

pub struct RestoreOptions {
    /// The `pico` binary (to run the worker).
    pub pico: PathBuf,
    /// The repository (for deploy/apps).
    pub repo: PathBuf,
    pub apps: Vec<App>,
    pub modes: Vec<Mode>,
    pub runs: usize,
    pub heap_mb: u32,
    /// The `[cold]` section for the workers (the cold modes need a remote-like cold tier).
    pub cold_toml: Option<String>,
    /// More of the workers' `pico.toml` (e.g. a `[worker]` section), ahead of `[cold]`.
    pub worker_toml: Option<String>,
    /// Work directory (homes, images); removed afterwards.
    pub work: PathBuf,
    /// `[worker] locality_pack` of the workers (false: the restore set from the ordinary packs,
    /// for comparison).
    pub locality_pack: bool,
    /// Time from the start of a checkpoint to the measured restore of it (see the module doc).
    pub idle: Duration,
    /// After the idle time, wait until the worker's background recompression (behind each
    /// swap-out) has ended before a measured swap-in (see the module doc).
    pub settle: bool,
    /// Tenants (and criu-eager's app) start with the deterministic layout: a tenant's first
    /// wake-up then borrows the ActiveSet an earlier tenant of its app learned (the worker's
    /// `program_sets`).
    pub deterministic: bool,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ModeResult {
    pub runs: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    /// Mean bytes read from the cold tier before the first answer.
    pub cold_bytes_first_answer: u64,
    /// Mean bytes read from the cold tier over a whole restore, background copy included.
    pub cold_bytes: u64,
    /// Mean sequential round trips to the cold tier before the first answer: waves of cold
    /// reads, overlapping reads counted once (`pagestore::cold::ReadWaves`).
    pub cold_round_trips: f64,
    /// The most of them before any one first answer.
    pub cold_round_trips_max: u64,
    /// Mean round trips waited for one after another before the first answer by `criu
    /// restore`'s reads and the tenant's faults (`pagestore::cold::ColdWaits`): while a fill
    /// keeps reads in flight, the waves above merge its reads with several such waits.
    pub cold_waits: f64,
    /// The most of them before any one first answer.
    pub cold_waits_max: u64,
    /// Share of the samples during which the store's background recompression (behind the
    /// swap-out before) ran: its cold reads count in the figures above, its CPU competes.
    pub recompressing_share: f64,
    /// Mean time from the start of each checkpoint to the start of its measured restore: the
    /// idle time, or more when the checkpoint took longer or `settle` waited.
    pub idle_ms: f64,
    /// Mean ActiveSet hit rate (share of the working set installed ahead of time).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activeset_hit_rate: Option<f64>,
    /// Mean pages installed eagerly from the ActiveSet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eager_pages: Option<f64>,
    /// Mean cold GETs of the restore set's prefetch (the locality pack's included).
    pub restore_set_cold_gets: f64,
    /// Mean pages of the ActiveSet prefetched into memory and left to fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefetched_pages: Option<f64>,
    /// Share of the swap-ins restored whole (plain `criu restore`, no lazy pages).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub whole_share: Option<f64>,
    /// First wake-ups whose background copy outlasted a request made right after the first
    /// answer, and the p50 of those requests and of one made after the copy (issue #17: the
    /// copy yields to faults, so at most 1.5x).
    pub requests_during_copy: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_during_copy_p50_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_after_copy_p50_ms: Option<f64>,
    pub samples_ms: Vec<f64>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct RestoreResults {
    /// app → mode → result.
    pub apps: std::collections::BTreeMap<String, std::collections::BTreeMap<String, ModeResult>>,
}

/// The `p`th percentile of `values` in any order (0 for none).
pub fn percentile_of(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    percentile(&sorted, p)
}

/// The median of `values` in any order (0 for none).
pub fn median(values: &[f64]) -> f64 {
    percentile_of(values, 50.0)
}

/// The `p`th percentile of `sorted` (0 for none).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p / 100.0 * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn summarize(samples: Vec<f64>) -> ModeResult {
    let mut sorted = samples.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    ModeResult {
        runs: samples.len(),
        p50_ms: percentile(&sorted, 50.0),
        p95_ms: percentile(&sorted, 95.0),
        p99_ms: percentile(&sorted, 99.0),
        min_ms: sorted.first().copied().unwrap_or(0.0),
        max_ms: sorted.last().copied().unwrap_or(0.0),
        samples_ms: samples,
        ..Default::default()
    }
}

/// Polls the app until it answers correctly; the time it took.
fn first_answer(app: App, port: u16, started: Instant) -> Result<f64, Error> {
    loop {
        if app.probe(port)? {
            return Ok(started.elapsed().as_secs_f64() * 1000.0);
        }
        if started.elapsed() > Duration::from_secs(60) {
            return Err(Error::Step(
                app.name().into(),
                "no correct answer in 60 s".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits until something answers on loopback `port` (at most 20 s).
pub fn wait_port(port: u16) -> Result<(), Error> {
    let started = Instant::now();
    while !worker::readiness::listens(port, Duration::from_secs(1)) {
        if started.elapsed() > Duration::from_secs(20) {
            return Err(Error::Step(
                format!("port {port}"),
                "app did not listen".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Runs the whole benchmark.
pub async fn run(opts: &RestoreOptions) -> Result<RestoreResults, Error> {
    worker::process::become_subreaper()
        .map_err(|e| Error::io("prctl(PR_SET_CHILD_SUBREAPER)", e))?;
    let mut results = RestoreResults::default();
    for &app in &opts.apps {
        let mut per_mode = std::collections::BTreeMap::new();
        if opts.modes.contains(&Mode::CriuEager) {
            tracing::info!(app = app.name(), "mode criu-eager");
            per_mode.insert(
                Mode::CriuEager.name().to_string(),
                criu_eager(opts, app).await?,
            );
        }
        let lazy: Vec<Mode> = opts
            .modes
            .iter()
            .copied()
            .filter(|m| *m != Mode::CriuEager)
            .collect();
        if !lazy.is_empty() {
            for (mode, r) in lazy::lazy_modes(opts, app, &lazy).await? {
                per_mode.insert(mode.name().to_string(), r);
            }
        }
        results.apps.insert(app.name().to_string(), per_mode);
    }
    Ok(results)
}

/// How long a dumped app's processes may take to be gone (reaped: restored trees are
/// re-parented to us).
const DUMPED_GONE_WITHIN: Duration = Duration::from_secs(10);

/// Waits for each process of a dumped tree to be gone, reaping it.
fn reap_dumped(tree: Vec<u32>) {
    for pid in tree {
        worker::process::wait_gone_blocking(pid, DUMPED_GONE_WITHIN);
    }
}

fn spawn_app(
    app: App,
    port: u16,
    dir: &Path,
    repo: &Path,
    deterministic: bool,
    netns: Option<&Path>,
    cgroup: Option<&StandaloneCgroup>,
) -> Result<Child, Error> {
    let cmd = app.command(port, dir, repo)?;
    let log = std::fs::File::create(dir.join("app.log")).map_err(|e| Error::io(dir, e))?;
    let log2 = log.try_clone().map_err(|e| Error::io(dir, e))?;
    let mut c = Command::new(&cmd[0]);
    c.args(&cmd[1..])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    // Started as the worker starts its tenants, so that both restore the same kind of tree.
    let ns = netns
        .map(worker::netns::open)
        .transpose()
        .map_err(|e| Error::Step("network namespace".into(), e.to_string()))?;
    worker::launch::as_tenant(&mut c, deterministic, ns, None);
    if let Some(cgroup) = cgroup {
        cgroup
            .join_before_exec(&mut c)
            .map_err(|e| Error::Step("cgroup".into(), e.to_string()))?;
    }
    worker::launch::spawn_in_own_pid_namespace(move || c.spawn())
        .map_err(|e| Error::Step(cmd[0].clone(), e.to_string()))
}

/// The baseline: CRIU dumps to tmpfs and restores eagerly, as an operator would script it,
/// with the app in the namespaces and cgroup the worker gives its tenants.
async fn criu_eager(opts: &RestoreOptions, app: App) -> Result<ModeResult, Error> {
    let criu = worker::criu::Criu::detect(Path::new("criu"), 2)
        .await
        .map_err(|e| Error::Step("criu".into(), e.to_string()))?;
    let dir = opts.work.join(format!("eager-{}", app.name()));
    let scratch = dir.join("cgroup");
    std::fs::create_dir_all(&scratch).map_err(|e| Error::io(&scratch, e))?;
    // A cgroup of its own with the bench tenants' limits (the defaults), dumped and restored
    // into as the worker's tenants are.
    let cgroup = StandaloneCgroup::make(&dir, app.name(), Default::default(), &scratch)
        .map_err(|e| Error::Step("cgroup".into(), e.to_string()))?;
    let criu = match &cgroup {
        Some(c) => c.criu(criu),
        None => criu,
    };
    // A network namespace of its own, as the worker gives each tenant (CRIU dumps and restores
    // the app inside it); the bench reaches the app from a thread inside it.
    let netns = dir.join("netns");
    worker::netns::create(&netns).map_err(|e| Error::io(&netns, e))?;
    let measured = in_own_netns(opts, app, &criu, &dir, &netns, cgroup.as_ref()).await;
    let _ = worker::netns::remove(&netns);
    if let Some(c) = cgroup {
        if let Err(e) = c.close().await {
            tracing::warn!(error = %e, "the baseline's cgroup stays behind");
        }
    }
    let (samples, idle): (Vec<f64>, Vec<f64>) = measured?.into_iter().unzip();
    let mut r = summarize(samples);
    r.idle_ms = idle.iter().sum::<f64>() / idle.len().max(1) as f64;
    Ok(r)
}

/// [`criu_eager`] with the app in the network namespace pinned at `netns` and in `cgroup`.
async fn in_own_netns(
    opts: &RestoreOptions,
    app: App,
    criu: &worker::criu::Criu,
    dir: &Path,
    netns: &Path,
    cgroup: Option<&StandaloneCgroup>,
) -> Result<Vec<(f64, f64)>, Error> {
    let ns = worker::netns::open(netns).map_err(|e| Error::io(netns, e))?;
    let port = free_port()?;
    let child = spawn_app(
        app,
        port,
        dir,
        &opts.repo,
        opts.deterministic,
        Some(netns),
        cgroup,
    )?;
    let mut pid = child.id();
    let heap_mb = opts.heap_mb;
    inside(&ns, move || {
        wait_port(port)?;
        app.prepare(port, heap_mb)
    })?;
    let images =
        Path::new("/dev/shm").join(format!("pico-bench-{}-{}", std::process::id(), app.name()));
    // Whatever happens (a failed dump, restore or answer), neither the app nor its image in
    // memory is left behind.
    let measured = eager_runs(
        opts,
        app,
        criu,
        dir,
        &images,
        port,
        &mut pid,
        (netns, &ns),
        cgroup,
    )
    .await;
    worker::process::kill_tree_blocking(pid);
    let _ = std::fs::remove_dir_all(&images);
    measured
}

/// Runs `f` on a thread of its own inside network namespace `ns` (where the app listens).
fn inside<T: Send>(
    ns: &std::fs::File,
    f: impl FnOnce() -> Result<T, Error> + Send,
) -> Result<T, Error> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                worker::netns::enter(ns)
                    .map_err(|e| Error::Step("network namespace".into(), e.to_string()))?;
                f()
            })
            .join()
            .unwrap_or_else(|_| Err(Error::Step("probe".into(), "its thread panicked".into())))
    })
}

/// The dump-then-restore rounds of [`criu_eager`], their first-answer times and idle times, ms
/// (the first round, a warm-up, left out); `pid` follows the app through its restores. CRIU
/// runs inside the app's network namespace (`netns`, pinned; `ns` open), as the worker's does;
/// with `cgroup`, the dump records the app's cgroup, which is removed while the app is not
/// running and made again by the restore (timed), as the worker does.
#[allow(clippy::too_many_arguments)]
async fn eager_runs(
    opts: &RestoreOptions,
    app: App,
    criu: &worker::criu::Criu,
    dir: &Path,
    images: &Path,
    port: u16,
    pid: &mut u32,
    (netns, ns): (&Path, &std::fs::File),
    cgroup: Option<&StandaloneCgroup>,
) -> Result<Vec<(f64, f64)>, Error> {
    let cgroup_step = |e: std::io::Error| Error::Step("cgroup".into(), e.to_string());
    let mut samples = Vec::new();
    let bar = crate::progress::runs(opts.runs as u64 + 1, &format!("{} criu", app.name()));
    for run in 0..=opts.runs {
        bar.at(run as u64);
        let _ = std::fs::remove_dir_all(images);
        std::fs::create_dir_all(images).map_err(|e| Error::io(images, e))?;
        let work = dir.join("criu-work");
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).map_err(|e| Error::io(&work, e))?;
        let tree = worker::process::process_tree(*pid);
        let hierarchies = cgroup.map(|c| c.hierarchies_holding(*pid));
        let checkpointed = Instant::now();
        criu.dump_cgroups(
            *pid,
            images,
            &work,
            Some(netns),
            None,
            hierarchies.as_deref().unwrap_or_default(),
            false,
        )
        .await
        .map_err(|e| Error::Step("criu dump".into(), e.to_string()))?;
        reap_dumped(tree);
        if let Some(c) = cgroup {
            c.remove().await.map_err(cgroup_step)?;
        }
        tokio::time::sleep(opts.idle.saturating_sub(checkpointed.elapsed())).await;
        let idle_ms = checkpointed.elapsed().as_secs_f64() * 1000.0;
        let started = Instant::now();
        if let Some(c) = cgroup {
            c.recreate().map_err(cgroup_step)?;
        }
        *pid = criu
            .restore(
                images,
                &work,
                false,
                worker::criu::Placement {
                    netns: Some(netns),
                    ..Default::default()
                },
                false,
            )
            .await
            .map_err(|e| Error::Step("criu restore".into(), e.to_string()))?;
        let ms = inside(ns, || first_answer(app, port, started))?;
        if cgroup.is_some_and(|c| !c.holds(*pid)) {
            return Err(Error::Step(
                "criu restore".into(),
                format!("the restored app (pid {pid}) is not in its cgroup"),
            ));
        }
        if run > 0 {
            samples.push((ms, idle_ms));
        }
    }
    Ok(samples)
}

/// Starts `app` under `dir`, gives it its state (`heap_mb` for the large heap) and checkpoints
/// it into `images` with CRIU, as `criu-eager` does before its restores; the app is gone
/// afterwards. For benchmarks that need a real memory image (`pico bench store`).
pub async fn checkpoint_app(
    criu: &worker::criu::Criu,
    app: App,
    dir: &Path,
    repo: &Path,
    heap_mb: u32,
    images: &Path,
) -> Result<(), Error> {
    for d in [dir, images] {
        std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
    }
    let port = free_port()?;
    let pid = spawn_app(app, port, dir, repo, false, None, None)?.id();
    if let Err(e) = wait_port(port).and_then(|()| app.prepare(port, heap_mb)) {
        worker::process::kill_tree_blocking(pid);
        return Err(e);
    }
    let work = dir.join("criu-dump");
    std::fs::create_dir_all(&work).map_err(|e| Error::io(&work, e))?;
    let tree = worker::process::process_tree(pid);
    if let Err(e) = criu.dump(pid, images, &work, None, None).await {
        worker::process::kill_tree_blocking(pid);
        return Err(Error::Criu {
            tenant: app.name().into(),
            source: Box::new(e),
        });
    }
    reap_dumped(tree);
    Ok(())
}

/// How much of a failed worker's log an error carries.
const WORKER_LOG_LINES: usize = 20;

/// A `pico worker run` of the benchmark's own, on its own home; stopped (SIGTERM) when dropped.
pub struct WorkerProc {
    child: Child,
    pub client: Client,
    log: PathBuf,
}

impl WorkerProc {
    /// Starts `pico --home home worker run` with `toml` as its `pico.toml` (its log:
    /// `home/worker.log`) and waits for its API socket.
    pub async fn start(pico: &Path, home: &Path, toml: &str) -> Result<WorkerProc, Error> {
        std::fs::create_dir_all(home).map_err(|e| Error::io(home, e))?;
        let config = home.join("pico.toml");
        std::fs::write(&config, toml).map_err(|e| Error::io(&config, e))?;
        let log_path = home.join("worker.log");
        let log = std::fs::File::create(&log_path).map_err(|e| Error::io(&log_path, e))?;
        let log2 = log.try_clone().map_err(|e| Error::io(&log_path, e))?;
        let child = Command::new(pico)
            .arg("--home")
            .arg(home)
            .args(["worker", "run"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| Error::Step("pico worker run".into(), e.to_string()))?;
        let socket = home.join("worker.sock");
        let mut worker = WorkerProc {
            child,
            client: Client::new(&socket),
            log: log_path,
        };
        let started = Instant::now();
        while !socket.exists() {
            let exited = worker.child.try_wait().ok().flatten();
            if exited.is_some() || started.elapsed() > Duration::from_secs(20) {
                let how = exited.map_or("did not start".to_string(), |s| format!("exited ({s})"));
                return Err(Error::Step("pico worker run".into(), worker.with_log(&how)));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(worker)
    }

    /// The worker's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// One request to the worker's API; its answer.
    pub async fn call(&self, request: &Request) -> Result<serde_json::Value, Error> {
        call(&self.client, request).await.map_err(|e| match e {
            Error::Step(step, message) => Error::Step(step, self.with_log(&message)),
            e => e,
        })
    }

    /// `message` followed by the end of the worker's log, which says why it failed.
    fn with_log(&self, message: &str) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let end = lines[lines.len().saturating_sub(WORKER_LOG_LINES)..].join("\n");
        format!("{message}\nthe end of {}:\n{end}", self.log.display())
    }

    /// `pico tenant status NAME`.
    pub async fn status(&self, name: &str) -> Result<serde_json::Value, Error> {
        self.call(&Request::Status {
            name: name.to_string(),
        })
        .await
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        // SAFETY: kill(2) of our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

async fn call(client: &Client, request: &Request) -> Result<serde_json::Value, Error> {
    client
        .call(request)
        .await
        .map_err(|e| Error::Step("pico worker".into(), e.to_string()))
}

/// The `[worker]` part of the bench workers' `pico.toml`: `--worker-config`, plus
/// `locality_pack = false` for `--no-locality-pack` (in the same section).
fn worker_toml(opts: &RestoreOptions) -> String {
    let toml = opts.worker_toml.clone().unwrap_or_default();
    if opts.locality_pack {
        return toml;
    }
    let key = "locality_pack = false\n";
    match toml.find("[worker]\n") {
        Some(at) => {
            let at = at + "[worker]\n".len();
            format!("{}{key}{}", &toml[..at], &toml[at..])
        }
        None => format!("[worker]\n{key}{toml}"),
    }
}
