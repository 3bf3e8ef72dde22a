//! `pico bench density`: the dense host as a whole, on real tenants.
//!
//! One `pico worker run` of its own carries N tenants (a third each of a Python web app, redis
//! with data and nginx; [`population`]), sandboxed as a user gets them, each with state of its
//! own that a request writes at registration and every later wake-up checks. The phases:
//!
//! 1. **register**: the tenants are added at a steady rate while those already idle swap out on
//!    their own (their idle timeout); a tenant counts once it ran, answered the request that
//!    wrote its state, and was swapped out. Host memory in use (`MemTotal - MemAvailable`, no
//!    cache dropped) is sampled throughout for its peak ([`host`]), and once all are idle and
//!    the store has settled, less the same figure before the worker started, divided by N.
//! 2. **burst**: wake-ups by real requests at open-loop Poisson rates ([`load`]), each to a
//!    random sleeping tenant; the phase is shorter than the idle timeout, so nothing woken in
//!    it sleeps again meanwhile. First-answer latency (connect to first byte) per rate, and the
//!    host's busy CPU over the phase (per wake-up, and as a share of its cores): a burst's tail
//!    is how busy the cores are while wake-ups overlap.
//! 3. **sustained**: the same at other rates, where each woken tenant goes back to sleep on its
//!    own; CPU per wake/sleep cycle from the start of the phase until every tenant woken in it
//!    sleeps again, and the highest rate held with p95 under [`GOAL_SUSTAINED_P95_MS`].
//!
//! Then what the swapped-out population costs in the store (`pico store stats`, `pico report
//! cost`: unique and shared bytes). [`report`] writes the tables, README and raw JSON.

pub mod host;
pub mod load;
pub mod population;
pub mod report;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use worker::protocol::Request;

use self::host::{CpuMark, Peak, Sampler};
use self::load::{Adder, Population, Registration, Rng, WakeSample};
use self::population::{Kind, Tenant};
use crate::error::{Error, Result};
use crate::provenance::Provenance;
use crate::restore::{percentile, WorkerProc};

/// The goal: host memory in use per idle tenant under this many bytes.
pub const GOAL_IDLE_BYTES: u64 = 1 << 20;
/// The goal: first-answer p95 under this at [`GOAL_BURST_RATE`] wake-ups/s.
pub const GOAL_BURST_P95_MS: f64 = 100.0;
pub const GOAL_BURST_RATE: f64 = 20.0;
/// A sustained rate is held when its p95 stays under this.
pub const GOAL_SUSTAINED_P95_MS: f64 = 250.0;

#[derive(Clone, Debug)]
pub struct Options {
    /// The `pico` binary (the worker, `store stats`, `report cost`).
    pub pico: PathBuf,
    /// The repository (deploy/apps/counter.py).
    pub repo: PathBuf,
    /// Scratch space (the worker's home, nginx's files); the caller removes it.
    pub work: PathBuf,
    /// Where README.md and results.json go.
    pub out: PathBuf,
    pub tenants: usize,
    /// Tenants added per second.
    pub register_rate: f64,
    /// Adds under way at most.
    pub register_concurrency: usize,
    /// Every tenant's idle timeout.
    pub idle_timeout: Duration,
    /// Wake-ups per second of the burst phases, and each phase's length (under the idle
    /// timeout).
    pub burst_rates: Vec<f64>,
    pub burst: Duration,
    /// Wake-ups per second of the sustained phases, and each phase's length.
    pub sustained_rates: Vec<f64>,
    pub sustained: Duration,
    /// Keys of ~450 bytes each redis tenant holds.
    pub redis_keys: usize,
    /// The tenants' ports are the free ones from this on.
    pub base_port: u16,
    pub seed: u64,
    /// More of the worker's `pico.toml`.
    pub worker_toml: Option<String>,
    /// How long to wait for every tenant to be asleep again after a phase.
    pub drain_limit: Duration,
    /// How long the host sleeps, once every tenant is asleep and the store settled, before
    /// its idle memory is measured: what the worker keeps for fast wake-ups lasts this long at
    /// most (the memory tier's `[hot] ttl_ms`, 30 s by default, checked every 4 s).
    pub idle_settle: Duration,
}

/// The population's phase: registration, the memory of the idle host.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Idle {
    pub registration: Registration,
    /// Tenants seen swapped out after registration: those that count.
    pub counted: usize,
    /// From the first add until every registered tenant was seen swapped out.
    pub all_asleep_after_s: f64,
    /// `MemTotal - MemAvailable` before the worker started, bytes.
    pub baseline_in_use_bytes: u64,
    /// ... with the worker started and no tenant.
    pub worker_alone_in_use_bytes: u64,
    /// ... with every tenant swapped out and the store settled, at once: what the worker
    /// keeps for fast wake-ups (its memory tier) still held.
    #[serde(default)]
    pub asleep_in_use_bytes: u64,
    /// (asleep − baseline) / counted.
    #[serde(default)]
    pub asleep_per_idle_tenant_bytes: i64,
    /// The worker's resident memory then.
    #[serde(default)]
    pub worker_rss_asleep_bytes: u64,
    /// The worker's memory tier then, and when idle (`pico_store_held_bytes{tier="hot"}`).
    #[serde(default)]
    pub hot_asleep_bytes: u64,
    #[serde(default)]
    pub hot_idle_bytes: u64,
    /// ... [`Options::idle_settle`] later (before b505eb5: at once, as `asleep_in_use_bytes`).
    pub idle_in_use_bytes: u64,
    /// (idle − baseline) / counted (negative when other work on the host freed more meanwhile).
    pub per_idle_tenant_bytes: i64,
    /// (idle − worker alone) / counted: the tenants without the worker's fixed costs.
    pub per_idle_tenant_over_worker_bytes: i64,
    /// The worker's resident memory then.
    pub worker_rss_idle_bytes: u64,
    /// `Shmem` of the host before the worker and when idle (tmpfs: the worker's staging), bytes.
    pub shmem_baseline_bytes: u64,
    pub shmem_idle_bytes: u64,
    /// `SUnreclaim` (kernel memory: the tenants' network namespaces, mounts...) likewise.
    pub sunreclaim_baseline_bytes: u64,
    pub sunreclaim_idle_bytes: u64,
    /// What the population is known to hold, without the rest of the host's churn: (worker
    /// RSS + Shmem growth + SUnreclaim growth) / counted.
    pub accounted_per_idle_tenant_bytes: u64,
    /// The worker's CPU (with what it reaped) per second while every tenant slept.
    pub worker_idle_cpu_s_per_s: f64,
}

/// Latency percentiles of the first answers, ms.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Latency {
    pub count: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    fn of(ms: &mut [f64]) -> Latency {
        ms.sort_by(f64::total_cmp);
        Latency {
            count: ms.len(),
            p50_ms: percentile(ms, 50.0),
            p95_ms: percentile(ms, 95.0),
            p99_ms: percentile(ms, 99.0),
            max_ms: ms.last().copied().unwrap_or(0.0),
        }
    }
}

/// One phase at one rate.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Phase {
    pub rate_per_s: f64,
    pub seconds: f64,
    /// Requests sent.
    pub requests: usize,
    /// Requests to a sleeping tenant: the wake-ups.
    pub wakes: usize,
    /// Requests that found their tenant already running (no sleeping one left): apart.
    pub found_running: usize,
    /// Answers without the tenant's own state, and requests without an answer.
    pub wrong: usize,
    pub unanswered: usize,
    /// First-answer latency of the wake-ups (connect to first byte), all kinds and per kind.
    pub latency: Latency,
    pub per_kind: std::collections::BTreeMap<String, Latency>,
    /// Latency of the requests that found their tenant running.
    pub found_running_latency: Latency,
    /// Swap-ins and swap-outs the worker counted over the phase (and its drain, when sustained).
    pub swap_ins: f64,
    pub swap_outs: f64,
    pub swap_failures: f64,
    /// Mean swap-in and swap-out seconds, from the worker's histograms.
    pub swap_in_mean_ms: f64,
    pub swap_out_mean_ms: f64,
    /// Sustained: from the phase's end until every tenant slept again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_s: Option<f64>,
    /// Sustained: CPU seconds of the worker and all it reaped (CRIU, tenants) over phase and
    /// drain, per swap-in; the same for the whole host (other work included).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_s_per_cycle: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_cpu_s_per_cycle: Option<f64>,
    /// Burst: busy CPU seconds of the whole host over the phase per wake-up, and the share of
    /// its cores they kept busy. The worker's own figure misses most of a burst: what CRIU does
    /// inside a restored tree (its memory allocated and copied in) is charged to the tenant,
    /// which is still running at the phase's end, not reaped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_cpu_s_per_wake: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_busy_share: Option<f64>,
    /// Sustained: p95 under the goal, every answer right, and drained within the limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<bool>,
    /// Peak memory during the phase.
    pub peak: Peak,
    pub samples: Vec<WakeSample>,
}

/// What the swapped-out population costs in the store.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StoreCost {
    /// `pico store stats --json`.
    pub stats: serde_json::Value,
    /// `total` of `pico report cost --json`.
    pub total: serde_json::Value,
    /// Mean `stored_bytes` per tenant of each kind (unique + apportioned shared + manifests +
    /// locality packs).
    pub mean_stored_bytes_per_kind: std::collections::BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    pub tenants: usize,
    pub idle_timeout_s: f64,
    /// [`Options::idle_settle`], seconds.
    #[serde(default)]
    pub idle_settle_s: f64,
    pub redis_keys: usize,
    pub limits: host::Limits,
    pub idle: Idle,
    pub burst: Vec<Phase>,
    pub sustained: Vec<Phase>,
    /// The highest sustained rate held (p95 under the goal).
    pub max_sustained_rate_per_s: Option<f64>,
    pub store: StoreCost,
    /// Peak memory per phase.
    pub peaks: std::collections::BTreeMap<String, Peak>,
    /// Tenants lost (`exited`, `failed`) at the end.
    pub lost: Vec<(String, String)>,
    /// Lines of the worker's log by swap-out reason, and failures it logged.
    pub worker_log: std::collections::BTreeMap<String, usize>,
    /// The worker's `/metrics` at the end.
    pub metrics_end: String,
    /// Why the phases stopped early (tenants still awake after the drain limit: the host could
    /// not be measured from a sleeping population any more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    pub goals: report::Goals,
    pub provenance: Option<Provenance>,
}

/// Runs the benchmark and writes its outputs into `opts.out`.
pub async fn run(opts: &Options) -> Result<Report> {
    check(opts)?;
    host::raise_open_files();
    let provenance =
        Provenance::collect(&[("criu", &["--version"]), ("redis-server", &["--version"])]);
    let ports = population::ports(opts.base_port, opts.tenants)?;
    let tenants: Vec<Tenant> = ports
        .iter()
        .enumerate()
        .map(|(i, &p)| Tenant::new(i, p))
        .collect();
    let apps = opts.work.join("apps");
    std::fs::create_dir_all(&apps).map_err(|e| Error::io(&apps, e))?;

    let mut report = Report {
        tenants: opts.tenants,
        idle_timeout_s: opts.idle_timeout.as_secs_f64(),
        idle_settle_s: opts.idle_settle.as_secs_f64(),
        redis_keys: opts.redis_keys,
        limits: host::Limits::read(),
        provenance: Some(provenance),
        ..Default::default()
    };
    report.idle.baseline_in_use_bytes = host::memory_in_use_settled().await?;
    report.idle.shmem_baseline_bytes = host::meminfo_bytes("Shmem:");
    report.idle.sunreclaim_baseline_bytes = host::meminfo_bytes("SUnreclaim:");
    let home = opts.work.join("home");
    let worker =
        WorkerProc::start(&opts.pico, &home, opts.worker_toml.as_deref().unwrap_or("")).await?;
    let socket = home.join("worker.sock");
    let worker_pid = worker.pid();
    tokio::time::sleep(Duration::from_secs(1)).await;
    report.idle.worker_alone_in_use_bytes = host::memory_in_use_settled().await?;
    let sampler = Sampler::start(worker_pid);
    let pop = Population::new(tenants);
    pop.poll(&socket);

    let result = phases(
        opts,
        &mut report,
        &pop,
        &sampler,
        &socket,
        &apps,
        worker_pid,
    )
    .await;
    report.peaks = sampler.peaks();
    report.lost = pop.lost();
    report.worker_log = report::worker_log_counts(&home.join("worker.log"));
    report.metrics_end = host::scrape(&socket).unwrap_or_default();
    report.goals = report::Goals::of(&report);
    // Written before the tenants are removed, which takes a while with many.
    let written = match &result {
        Ok(()) => report::write(&report, &opts.out),
        Err(_) => Ok(()),
    };
    remove_all(&socket, &pop).await;
    drop(worker);
    result?;
    written?;
    Ok(report)
}

fn check(opts: &Options) -> Result<()> {
    if opts.tenants == 0 || opts.register_rate <= 0.0 {
        return Err(Error::BadOptions(
            "tenants and the registration rate must be above 0".into(),
        ));
    }
    if opts.burst >= opts.idle_timeout && !opts.burst_rates.is_empty() {
        return Err(Error::BadOptions(format!(
            "a burst phase ({:?}) must be shorter than the idle timeout ({:?}), so that nothing \
             woken in it sleeps again meanwhile",
            opts.burst, opts.idle_timeout
        )));
    }
    if opts
        .burst_rates
        .iter()
        .chain(&opts.sustained_rates)
        .any(|r| *r <= 0.0)
    {
        return Err(Error::BadOptions("every rate must be above 0".into()));
    }
    Ok(())
}

/// What the worker's memory tier holds, by its metrics (0 when they cannot be read).
fn hot_held_bytes(socket: &std::path::Path) -> u64 {
    host::scrape(socket).map_or(0, |text| {
        host::metric(&text, "pico_store_held_bytes{tier=\"hot\"}") as u64
    })
}

/// Every phase, in order, filling `report`.
async fn phases(
    opts: &Options,
    report: &mut Report,
    pop: &Population,
    sampler: &Sampler,
    socket: &std::path::Path,
    apps: &std::path::Path,
    worker_pid: u32,
) -> Result<()> {
    let mut rng = Rng::new(opts.seed);
    // 1. Registration, and the idle host.
    sampler.phase("register");
    let started = Instant::now();
    let adder = Adder {
        socket: socket.to_path_buf(),
        repo: opts.repo.clone(),
        apps: apps.to_path_buf(),
        idle_ms: opts.idle_timeout.as_millis() as u64,
        redis_keys: opts.redis_keys,
        concurrency: opts.register_concurrency,
    };
    report.idle.registration = load::register(pop, adder, opts.register_rate).await?;
    info!("waiting for every registered tenant to be swapped out");
    let all = pop
        .wait_for(opts.idle_timeout + opts.drain_limit, |c| {
            c.counted == c.registered
        })
        .await;
    report.idle.counted = pop.census().counted;
    report.idle.all_asleep_after_s = started.elapsed().as_secs_f64();
    if !all {
        warn!(census = ?pop.census(), "not every registered tenant was swapped out");
    }
    sampler.phase("idle");
    settle_store(socket).await;
    // The worker hands its freed heap back every 2 s.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = &mut report.idle;
    let n = idle.counted.max(1) as i64;
    let per_tenant = |in_use: u64, from: u64| (in_use as i64 - from as i64) / n;
    idle.asleep_in_use_bytes = host::memory_in_use_settled().await?;
    idle.worker_rss_asleep_bytes = host::process_status_bytes(worker_pid, "VmRSS:");
    idle.hot_asleep_bytes = hot_held_bytes(socket);
    idle.asleep_per_idle_tenant_bytes =
        per_tenant(idle.asleep_in_use_bytes, idle.baseline_in_use_bytes);
    info!(
        seconds = opts.idle_settle.as_secs(),
        "every tenant asleep; letting the host sleep before measuring its memory"
    );
    tokio::time::sleep(opts.idle_settle).await;
    idle.idle_in_use_bytes = host::memory_in_use_settled().await?;
    idle.hot_idle_bytes = hot_held_bytes(socket);
    idle.worker_rss_idle_bytes = host::process_status_bytes(worker_pid, "VmRSS:");
    idle.shmem_idle_bytes = host::meminfo_bytes("Shmem:");
    idle.sunreclaim_idle_bytes = host::meminfo_bytes("SUnreclaim:");
    idle.per_idle_tenant_bytes = per_tenant(idle.idle_in_use_bytes, idle.baseline_in_use_bytes);
    idle.per_idle_tenant_over_worker_bytes =
        per_tenant(idle.idle_in_use_bytes, idle.worker_alone_in_use_bytes);
    idle.accounted_per_idle_tenant_bytes = (idle.worker_rss_idle_bytes
        + idle
            .shmem_idle_bytes
            .saturating_sub(idle.shmem_baseline_bytes)
        + idle
            .sunreclaim_idle_bytes
            .saturating_sub(idle.sunreclaim_baseline_bytes))
        / n as u64;
    let quiet = CpuMark::now(worker_pid)?;
    let window = QUIET.min(opts.idle_timeout);
    tokio::time::sleep(window).await;
    idle.worker_idle_cpu_s_per_s =
        (CpuMark::now(worker_pid)?.worker_s - quiet.worker_s) / window.as_secs_f64();
    info!(
        per_idle_tenant_kib = idle.per_idle_tenant_bytes / 1024,
        counted = idle.counted,
        "the population sleeps"
    );
    report.store = store_cost(&opts.pico, &opts.work.join("home")).await;
    partial(opts, report);

    // 2. Bursts: nothing woken sleeps again within the phase.
    for &rate in &opts.burst_rates {
        let label = format!("burst {rate}/s");
        if !drain(pop, opts.drain_limit + opts.idle_timeout, &label).await {
            return stop(opts, report, pop, &label);
        }
        sampler.phase(&label);
        let before = host::scrape(socket).unwrap_or_default();
        let (cpu0, started) = (CpuMark::now(worker_pid)?, Instant::now());
        let samples = load::wake_phase(pop, rate, opts.burst, &mut rng, &label).await?;
        let busy_s = CpuMark::now(worker_pid)?.host_s - cpu0.host_s;
        let after = host::scrape(socket).unwrap_or_default();
        let mut phase = summarize(rate, opts.burst, samples, &before, &after);
        phase.host_cpu_s_per_wake = Some(busy_s / phase.swap_ins.max(1.0));
        phase.host_busy_share = Some(busy_s / (started.elapsed().as_secs_f64() * host::cores()));
        phase.peak = sampler.peaks().remove(&label).unwrap_or_default();
        info!(
            rate,
            p95_ms = phase.latency.p95_ms,
            wakes = phase.wakes,
            host_busy_share = phase.host_busy_share,
            "burst phase done"
        );
        report.burst.push(phase);
        partial(opts, report);
    }

    // 3. Sustained: each woken tenant sleeps again; CPU until the last one does.
    for &rate in &opts.sustained_rates {
        let label = format!("sustained {rate}/s");
        if !drain(pop, opts.drain_limit + opts.idle_timeout, &label).await {
            return stop(opts, report, pop, &label);
        }
        sampler.phase(&label);
        let before = host::scrape(socket).unwrap_or_default();
        let cpu0 = CpuMark::now(worker_pid)?;
        let samples = load::wake_phase(pop, rate, opts.sustained, &mut rng, &label).await?;
        let ended = Instant::now();
        let drained = drain(pop, opts.drain_limit + opts.idle_timeout, &label).await;
        let cpu1 = CpuMark::now(worker_pid)?;
        let after = host::scrape(socket).unwrap_or_default();
        let mut phase = summarize(rate, opts.sustained, samples, &before, &after);
        phase.drain_s = Some(ended.elapsed().as_secs_f64());
        let cycles = phase.swap_ins.max(1.0);
        phase.cpu_s_per_cycle = Some((cpu1.worker_s - cpu0.worker_s) / cycles);
        phase.host_cpu_s_per_cycle = Some((cpu1.host_s - cpu0.host_s) / cycles);
        phase.held = Some(
            drained
                && phase.wrong == 0
                && phase.unanswered == 0
                && phase.latency.p95_ms < GOAL_SUSTAINED_P95_MS,
        );
        phase.peak = sampler.peaks().remove(&label).unwrap_or_default();
        info!(
            rate,
            p95_ms = phase.latency.p95_ms,
            cpu_s_per_cycle = phase.cpu_s_per_cycle,
            "sustained phase done"
        );
        report.sustained.push(phase);
        partial(opts, report);
    }
    report.max_sustained_rate_per_s = report
        .sustained
        .iter()
        .filter(|p| p.held == Some(true))
        .map(|p| p.rate_per_s)
        .max_by(f64::total_cmp);
    sampler.phase("end");
    Ok(())
}

/// Writes what was measured so far (a later phase may never end).
fn partial(opts: &Options, report: &mut Report) {
    report.goals = report::Goals::of(report);
    if let Err(e) = report::write(report, &opts.out) {
        warn!(error = %e, "writing the partial results");
    }
}

/// The phases end here: tenants did not all sleep again before `label`.
fn stop(opts: &Options, report: &mut Report, pop: &Population, label: &str) -> Result<()> {
    let c = pop.census();
    report.stopped = Some(format!(
        "before {label}: {} of {} tenants still awake after the drain limit ({:.0} s)",
        c.awake,
        c.registered,
        (opts.drain_limit + opts.idle_timeout).as_secs_f64()
    ));
    warn!(reason = report.stopped.as_deref(), "phases stopped");
    Ok(())
}

/// How long the worker's CPU is measured while every tenant sleeps (at most the idle timeout).
const QUIET: Duration = Duration::from_secs(5);

/// Waits until no registered tenant is awake (at most `limit`); whether none is.
async fn drain(pop: &Population, limit: Duration, label: &str) -> bool {
    let bar = crate::progress::bar(pop.len() as u64, "asleep");
    bar.set_message(format!(
        "before/after {label}: waiting for woken tenants to sleep again"
    ));
    let ok = pop
        .wait_for(limit, |c| {
            bar.set_position(c.registered.saturating_sub(c.awake) as u64);
            c.awake == 0
        })
        .await;
    bar.finish_and_clear();
    if !ok {
        warn!(census = ?pop.census(), phase = label, "tenants still awake after the drain limit");
    }
    ok
}

/// Waits (at most 5 min) until the store has recompressed what the swap-outs ingested.
async fn settle_store(socket: &std::path::Path) {
    let client = worker::protocol::Client::new(socket);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(300) {
        match client.call(&Request::StoreStats).await {
            Ok(s) if s["packs_pending"] == 0 => return,
            Ok(_) => {}
            Err(e) => warn!(error = %e, "store stats"),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    warn!("the store did not settle within 5 min");
}

/// `pico store stats` and `pico report cost` of the worker's home (they read the cold tier
/// while the worker holds the local one).
async fn store_cost(pico: &std::path::Path, home: &std::path::Path) -> StoreCost {
    let json = |args: &'static [&'static str]| {
        let (pico, home) = (pico.to_path_buf(), home.to_path_buf());
        async move {
            let out = tokio::process::Command::new(&pico)
                .arg("--home")
                .arg(&home)
                .arg("--json")
                .args(args)
                .output()
                .await;
            match out {
                Ok(o) if o.status.success() => {
                    serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null)
                }
                Ok(o) => {
                    warn!(?args, stderr = %String::from_utf8_lossy(&o.stderr), "failed");
                    serde_json::Value::Null
                }
                Err(e) => {
                    warn!(?args, error = %e, "could not run pico");
                    serde_json::Value::Null
                }
            }
        }
    };
    let stats = json(&["store", "stats"]).await;
    let cost = json(&["report", "cost"]).await;
    let mut per_kind: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    for t in cost["tenants"].as_array().into_iter().flatten() {
        let name = t["name"].as_str().unwrap_or("");
        let kind = population::KINDS
            .into_iter()
            .find(|k| name.ends_with(k.name()))
            .map_or("other", Kind::name);
        let e = per_kind.entry(kind.to_string()).or_default();
        e.0 += t["stored_bytes"].as_u64().unwrap_or(0);
        e.1 += 1;
    }
    StoreCost {
        stats,
        total: cost["total"].clone(),
        mean_stored_bytes_per_kind: per_kind
            .into_iter()
            .map(|(k, (bytes, n))| (k, bytes / n.max(1)))
            .collect(),
    }
}

/// A phase's samples and the worker's metrics around it.
fn summarize(
    rate: f64,
    duration: Duration,
    samples: Vec<WakeSample>,
    before: &str,
    after: &str,
) -> Phase {
    let delta = |name: &str| host::metric(after, name) - host::metric(before, name);
    let mean_ms = |family: &str| {
        let n = delta(&format!("{family}_count"));
        if n > 0.0 {
            delta(&format!("{family}_sum")) / n * 1000.0
        } else {
            0.0
        }
    };
    let wakes: Vec<&WakeSample> = samples.iter().filter(|s| s.from_sleep).collect();
    let mut all: Vec<f64> = wakes.iter().filter_map(|s| s.first_byte_ms).collect();
    let mut per_kind = std::collections::BTreeMap::new();
    for kind in population::KINDS {
        let mut ms: Vec<f64> = wakes
            .iter()
            .filter(|s| s.kind == kind)
            .filter_map(|s| s.first_byte_ms)
            .collect();
        per_kind.insert(kind.name().to_string(), Latency::of(&mut ms));
    }
    let mut running: Vec<f64> = samples
        .iter()
        .filter(|s| !s.from_sleep)
        .filter_map(|s| s.first_byte_ms)
        .collect();
    Phase {
        rate_per_s: rate,
        seconds: duration.as_secs_f64(),
        requests: samples.len(),
        wakes: wakes.len(),
        found_running: samples.len() - wakes.len(),
        wrong: samples
            .iter()
            .filter(|s| !s.right && s.first_byte_ms.is_some())
            .count(),
        unanswered: samples.iter().filter(|s| s.first_byte_ms.is_none()).count(),
        latency: Latency::of(&mut all),
        per_kind,
        found_running_latency: Latency::of(&mut running),
        swap_ins: delta("pico_swap_ins_total"),
        swap_outs: delta("pico_swap_outs_total"),
        swap_failures: delta("pico_swap_failures_total"),
        swap_in_mean_ms: mean_ms("pico_swap_in_seconds"),
        swap_out_mean_ms: mean_ms("pico_swap_out_seconds"),
        samples,
        ..Default::default()
    }
}

/// Removes every tenant (a stopped worker would leave their namespaces mounted), eight at a
/// time.
async fn remove_all(socket: &std::path::Path, pop: &Population) {
    let client = std::sync::Arc::new(worker::protocol::Client::new(socket));
    let bar = crate::progress::bar(pop.len() as u64, "remove");
    bar.set_message("removing the tenants");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..pop.len() {
        if tasks.len() >= 8 {
            let _ = tasks.join_next().await;
            bar.inc(1);
        }
        let (client, name) = (client.clone(), pop.name(i));
        tasks.spawn(async move {
            if let Err(e) = client.call(&Request::Rm { name }).await {
                tracing::debug!(error = %e, "rm");
            }
        });
    }
    while tasks.join_next().await.is_some() {
        bar.inc(1);
    }
    bar.finish_and_clear();
}
