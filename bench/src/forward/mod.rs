//! `pico bench forward`: what the worker's forwarding costs a tenant's clients.
//!
//! The worker owns each tenant's public port: while the tenant runs its kernel forwards the port
//! into the tenant's network namespace (`worker::kernel_forward`), else the worker relays each
//! connection (`worker::serving`: two extra loopback hops and a splice loop). This measures
//! that price against a direct connection, in the same
//! run: one nginx ([`server`]) is a tenant of a real `pico worker run` (forwarded), the same
//! nginx with the same files runs straight on the host (direct). A hand-written client
//! ([`client`]) measures, alternating direct and forwarded round by round (and which goes
//! first), so that noise from other processes falls on both:
//! - latency of a small file, many requests on one kept-alive connection, and again with a new
//!   connection per request (connect included): p50/p95/p99 per round, reported as medians over
//!   the rounds, and forwarded − direct as the median of the rounds' differences;
//! - throughput of a large file, several transfers per round and side taking turns: MB/s, and
//!   forwarded / direct.
//!
//! The issue's goal: forwarded within [`GOAL_LATENCY_US`] µs (p50) and within 5% of the direct
//! throughput ([`GOAL_THROUGHPUT_RATIO`]).

pub mod client;
pub mod server;

use std::path::{Path, PathBuf};
use std::time::Duration;

use charts::{BarChart, Group};
use serde::Serialize;
use tracing::info;
use worker::protocol::Request;
use worker::tenant::TenantSpec;

use self::server::{DirectServer, Site, LARGE_PATH, SMALL_PATH};
use crate::error::{Error, Result};
use crate::net::free_port;
use crate::provenance::{self, Provenance};
use crate::restore::{percentile, wait_port, WorkerProc};

/// The issue's goal: forwarded p50 latency at most this many µs above direct.
pub const GOAL_LATENCY_US: f64 = 50.0;
/// The issue's goal: forwarded throughput at least this share of direct.
pub const GOAL_THROUGHPUT_RATIO: f64 = 0.95;

/// The tenant's name in the benchmark's worker.
const TENANT: &str = "fwd-nginx";

#[derive(Clone, Debug)]
pub struct Options {
    /// The `pico` binary (to run the worker).
    pub pico: PathBuf,
    /// Scratch space (the worker's home, the direct server's files); the caller removes it.
    pub work: PathBuf,
    /// Where the served files go (a tmpfs: no disk on either side); removed afterwards.
    pub site: PathBuf,
    /// Where results.json, forward.svg, throughput.svg and README.md go.
    pub out: PathBuf,
    /// Rounds, each measuring direct and forwarded once per kind (medians over them).
    pub rounds: usize,
    /// Timed small requests per round, side and kind (kept-alive, new connection).
    pub requests: usize,
    /// Untimed requests ahead of them, each time.
    pub warmup: usize,
    /// The small file, bytes.
    pub small_bytes: u64,
    /// The large file, bytes.
    pub large_bytes: u64,
    /// Large transfers per round and side, the sides taking turns (single transfers of a few
    /// hundred ms vary by several % on this VM: more of them make the ratio's median steadier).
    pub transfers: usize,
    /// Another `pico` build (e.g. the one before a change to the forwarding): its worker
    /// forwards to a third copy of the tenant, measured in the same rounds.
    pub compare_pico: Option<PathBuf>,
    /// A second worker (of this build, or of `compare_pico`) told to take this kernel path
    /// (`kernel_forward_path`: `routed` or `nat`), measured in the same rounds.
    pub compare_path: Option<String>,
}

/// Latency percentiles, µs.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Percentiles {
    pub p50_us: f64,
    pub p95_us: f64,
    pub p99_us: f64,
}

impl Percentiles {
    fn of(samples: &[Duration]) -> Percentiles {
        let mut us: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e6).collect();
        us.sort_by(f64::total_cmp);
        Percentiles {
            p50_us: percentile(&us, 50.0),
            p95_us: percentile(&us, 95.0),
            p99_us: percentile(&us, 99.0),
        }
    }

    /// Each percentile's median over `rounds`.
    fn median_of(rounds: &[Percentiles]) -> Percentiles {
        let pick = |f: fn(&Percentiles) -> f64| median(&rounds.iter().map(f).collect::<Vec<_>>());
        Percentiles {
            p50_us: pick(|p| p.p50_us),
            p95_us: pick(|p| p.p95_us),
            p99_us: pick(|p| p.p99_us),
        }
    }

    fn minus(&self, other: &Percentiles) -> Percentiles {
        Percentiles {
            p50_us: self.p50_us - other.p50_us,
            p95_us: self.p95_us - other.p95_us,
            p99_us: self.p99_us - other.p99_us,
        }
    }
}

/// One kind of small request, direct against forwarded.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LatencyComparison {
    /// Medians over the rounds.
    pub direct: Percentiles,
    pub forwarded: Percentiles,
    /// forwarded − direct, the median of the rounds' differences.
    pub difference: Percentiles,
    pub rounds_direct: Vec<Percentiles>,
    pub rounds_forwarded: Vec<Percentiles>,
}

impl LatencyComparison {
    fn of(direct: Vec<Percentiles>, forwarded: Vec<Percentiles>) -> LatencyComparison {
        let differences: Vec<Percentiles> = forwarded
            .iter()
            .zip(&direct)
            .map(|(f, d)| f.minus(d))
            .collect();
        LatencyComparison {
            direct: Percentiles::median_of(&direct),
            forwarded: Percentiles::median_of(&forwarded),
            difference: Percentiles::median_of(&differences),
            rounds_direct: direct,
            rounds_forwarded: forwarded,
        }
    }
}

/// The large transfer, direct against forwarded.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ThroughputComparison {
    pub bytes: u64,
    /// Medians over the transfers, MB/s (10^6 bytes).
    pub direct_mb_s: f64,
    pub forwarded_mb_s: f64,
    /// forwarded / direct, the median of the ratios of transfers made one after the other.
    pub ratio: f64,
    /// Each side at its best: the 90th percentile of its transfers, MB/s. On this VM a direct
    /// transfer over the loopback falls to 2-4 GB/s (against 6-7) in about a quarter of the
    /// runs, far more often than a forwarded one, which lifts the median ratio above what
    /// forwarding costs when both sides run at full speed.
    pub direct_best_mb_s: f64,
    pub forwarded_best_mb_s: f64,
    /// forwarded_best_mb_s / direct_best_mb_s.
    pub best_ratio: f64,
    /// Every transfer, in the order made (`transfers` per round).
    pub rounds_direct_mb_s: Vec<f64>,
    pub rounds_forwarded_mb_s: Vec<f64>,
}

/// One worker's forwarding against the direct runs.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Forwarding {
    /// Kept-alive connection, one request at a time.
    pub keep_alive: LatencyComparison,
    /// A new connection per request (connect to last byte).
    pub per_connection: LatencyComparison,
    pub throughput: ThroughputComparison,
}

/// The forwarding of a second worker (`--compare-pico`, `--compare-nat`).
#[derive(Clone, Debug, Serialize)]
pub struct Compared {
    pub pico: String,
    /// The kernel path its worker was told to take (`--compare-path`), if one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Its kernel forwarded the tenant's port (else its worker relayed every connection).
    pub by_kernel: bool,
    #[serde(flatten)]
    pub figures: Forwarding,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub rounds: usize,
    pub requests_per_round: usize,
    pub transfers_per_round: usize,
    pub warmup_requests: usize,
    pub small_bytes: u64,
    /// This build's worker against direct.
    #[serde(flatten)]
    pub forwarded: Forwarding,
    /// The kernel forwarded this build's tenant's port (else its worker relayed every
    /// connection).
    pub by_kernel: bool,
    /// The second worker (`--compare-pico`, `--compare-nat`), against the same direct runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compared: Option<Compared>,
    pub goal_latency_us: f64,
    pub goal_throughput_ratio: f64,
    pub server: String,
    pub provenance: Provenance,
}

fn median(values: &[f64]) -> f64 {
    percentile_of(values, 50.0)
}

/// The `p`th percentile of `values` in any order.
fn percentile_of(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    percentile(&sorted, p)
}

/// What the rounds measured, per side: direct, forwarded, the compared build's forwarding.
struct Samples {
    keep_alive: Vec<Vec<Percentiles>>,
    per_connection: Vec<Vec<Percentiles>>,
    transfer_s: Vec<Vec<f64>>,
}

impl Samples {
    fn new(sides: usize) -> Samples {
        Samples {
            keep_alive: vec![Vec::new(); sides],
            per_connection: vec![Vec::new(); sides],
            transfer_s: vec![Vec::new(); sides],
        }
    }

    /// Side `side` against the direct one.
    fn against_direct(&self, side: usize, large_bytes: u64) -> Forwarding {
        let mb_s = |runs: &[f64]| -> Vec<f64> {
            runs.iter()
                .map(|s| large_bytes as f64 / s.max(1e-9) / 1e6)
                .collect()
        };
        let (direct, forwarded) = (mb_s(&self.transfer_s[0]), mb_s(&self.transfer_s[side]));
        let ratios: Vec<f64> = forwarded
            .iter()
            .zip(&direct)
            .map(|(f, d)| f / d.max(1e-9))
            .collect();
        let (direct_best, forwarded_best) = (
            percentile_of(&direct, 90.0),
            percentile_of(&forwarded, 90.0),
        );
        Forwarding {
            keep_alive: LatencyComparison::of(
                self.keep_alive[0].clone(),
                self.keep_alive[side].clone(),
            ),
            per_connection: LatencyComparison::of(
                self.per_connection[0].clone(),
                self.per_connection[side].clone(),
            ),
            throughput: ThroughputComparison {
                bytes: large_bytes,
                direct_mb_s: median(&direct),
                forwarded_mb_s: median(&forwarded),
                ratio: median(&ratios),
                direct_best_mb_s: direct_best,
                forwarded_best_mb_s: forwarded_best,
                best_ratio: forwarded_best / direct_best.max(1e-9),
                rounds_direct_mb_s: direct,
                rounds_forwarded_mb_s: forwarded,
            },
        }
    }
}

/// The nginx tenant of a worker of its own (never swapped out), on its public port.
struct Forwarded {
    worker: WorkerProc,
    port: u16,
    /// Its kernel forwards the port (`worker::kernel_forward`), once admitted.
    by_kernel: bool,
}

impl Forwarded {
    /// Starts `pico worker run` of `pico` on `home` with `config` (its pico.toml) and adds the
    /// tenant, its files under `dir`.
    async fn start(
        pico: &Path,
        home: &Path,
        config: &str,
        site: &Site,
        dir: &Path,
    ) -> Result<Forwarded> {
        let worker = WorkerProc::start(pico, home, config).await?;
        let port = free_port()?;
        let cmd = server::nginx_command(site, dir, port)?;
        worker
            .call(&Request::Add(TenantSpec {
                idle_timeout_ms: Some(0),
                ..TenantSpec::new(TENANT, port, cmd)
            }))
            .await?;
        let by_kernel = kernel_forwards(&worker).await;
        info!(pico = %pico.display(), by_kernel, "tenant up");
        Ok(Forwarded {
            worker,
            port,
            by_kernel,
        })
    }

    /// Removes the tenant (a stopped worker would leave it running) and stops the worker.
    async fn stop(self) {
        let _ = self
            .worker
            .call(&Request::Rm {
                name: TENANT.into(),
            })
            .await;
    }
}

/// Waits (at most 3 s: a worker admits a running tenant at its next tick) until the worker
/// says its kernel forwards the tenant's port; false for a worker that relays (one built before
/// the kernel forwarded, or with `kernel_forwarding = false`).
async fn kernel_forwards(worker: &WorkerProc) -> bool {
    for _ in 0..30 {
        let status = worker
            .call(&Request::Status {
                name: TENANT.into(),
            })
            .await;
        if status.is_ok_and(|s| s["kernel_forwarded"] == true) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Runs the benchmark and writes its outputs into `opts.out`.
pub async fn run(opts: &Options) -> Result<Report> {
    if opts.rounds == 0
        || opts.requests == 0
        || opts.small_bytes == 0
        || opts.large_bytes == 0
        || opts.transfers == 0
    {
        return Err(Error::BadOptions(
            "rounds, requests and both file sizes must be above 0".into(),
        ));
    }
    // nginx is named apart (`nginx -v` prints on stderr, which provenance does not read).
    let provenance = Provenance::collect(&[]);
    let site = {
        let (root, small, large) = (opts.site.clone(), opts.small_bytes, opts.large_bytes);
        tokio::task::spawn_blocking(move || Site::create(&root, small, large))
            .await
            .map_err(|e| Error::Client(e.to_string()))??
    };

    // Direct: nginx on the host.
    let direct_port = free_port()?;
    let direct_dir = opts.work.join("direct");
    let direct = DirectServer::start(
        &server::nginx_command(&site, &direct_dir, direct_port)?,
        &direct_dir,
    )?;
    wait_port(direct_port)?;

    // Forwarded: the same nginx as a worker's tenant; again behind the compared build's worker.
    let w = &opts.work;
    let mut forwarded =
        vec![Forwarded::start(&opts.pico, &w.join("home"), "", &site, &w.join("tenant")).await?];
    let compared_pico = compared_pico(opts);
    if let Some(pico) = &compared_pico {
        let config = opts.compare_path.as_ref().map_or(String::new(), |path| {
            format!("[worker]\nkernel_forward_path = \"{path}\"\n")
        });
        let other = Forwarded::start(
            pico,
            &w.join("home-compared"),
            &config,
            &site,
            &w.join("tenant-compared"),
        )
        .await;
        match other {
            Ok(other) => forwarded.push(other),
            Err(e) => {
                for f in forwarded {
                    f.stop().await;
                }
                return Err(e);
            }
        }
    }
    let mut ports = vec![direct_port];
    ports.extend(forwarded.iter().map(|f| f.port));
    let by_kernel: Vec<bool> = forwarded.iter().map(|f| f.by_kernel).collect();
    info!(?ports, "servers up (direct, forwarded, compared)");

    let measured = {
        let o = opts.clone();
        tokio::task::spawn_blocking(move || measure(&o, &ports))
            .await
            .map_err(|e| Error::Client(e.to_string()))
    };
    for f in forwarded {
        f.stop().await;
    }
    drop(direct);
    drop(site);
    let samples = measured??;

    let compared = compared_pico.map(|pico| Compared {
        pico: pico.display().to_string(),
        path: opts.compare_path.clone(),
        by_kernel: by_kernel.get(1).copied().unwrap_or(false),
        figures: samples.against_direct(2, opts.large_bytes),
    });
    let report = Report {
        rounds: opts.rounds,
        requests_per_round: opts.requests,
        transfers_per_round: opts.transfers,
        warmup_requests: opts.warmup,
        small_bytes: opts.small_bytes,
        forwarded: samples.against_direct(1, opts.large_bytes),
        by_kernel: by_kernel.first().copied().unwrap_or(false),
        compared,
        goal_latency_us: GOAL_LATENCY_US,
        goal_throughput_ratio: GOAL_THROUGHPUT_RATIO,
        server: server::nginx_version(),
        provenance,
    };
    write_outputs(&report, &opts.out)?;
    Ok(report)
}

/// The second worker's `pico`, if there is one.
fn compared_pico(opts: &Options) -> Option<PathBuf> {
    match (&opts.compare_pico, &opts.compare_path) {
        (Some(pico), _) => Some(pico.clone()),
        (None, Some(_)) => Some(opts.pico.clone()),
        (None, None) => None,
    }
}

/// The rounds, on this (blocking) thread, the sides taking turns at going first. Each side
/// gets an untimed transfer first (the file into the page cache, the connections' buffers
/// grown).
fn measure(opts: &Options, ports: &[u16]) -> Result<Samples> {
    let (small, large) = (opts.small_bytes, opts.large_bytes);
    for &port in ports {
        client::transfer(port, LARGE_PATH, large)?;
    }
    let mut s = Samples::new(ports.len());
    let bar = crate::progress::bar(opts.rounds as u64, "forward");
    for round in 0..opts.rounds {
        let mut order: Vec<usize> = (0..ports.len()).collect();
        order.rotate_left(round % ports.len());
        for &side in &order {
            let lat =
                client::keep_alive(ports[side], SMALL_PATH, small, opts.warmup, opts.requests)?;
            s.keep_alive[side].push(Percentiles::of(&lat));
        }
        for &side in &order {
            let lat =
                client::per_connection(ports[side], SMALL_PATH, small, opts.warmup, opts.requests)?;
            s.per_connection[side].push(Percentiles::of(&lat));
        }
        for _ in 0..opts.transfers {
            for &side in &order {
                let took = client::transfer(ports[side], LARGE_PATH, large)?;
                s.transfer_s[side].push(took.as_secs_f64());
            }
        }
        let p50 = |kind: &[Vec<Percentiles>]| -> Vec<f64> {
            kind.iter().map(|side| side[round].p50_us).collect()
        };
        info!(
            round,
            keep_alive_p50_us = ?p50(&s.keep_alive),
            per_connection_p50_us = ?p50(&s.per_connection),
            transfer_s = ?s.transfer_s.iter().map(|side| side.last()).collect::<Vec<_>>(),
            "round done"
        );
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(s)
}

/// Each worker's forwarding with its name (and who forwarded): this build's, then the
/// compared one's.
fn workers(r: &Report) -> Vec<(String, &Forwarding)> {
    let by = |kernel: bool| if kernel { "kernel" } else { "relay" };
    let mut v = vec![(format!("this build ({})", by(r.by_kernel)), &r.forwarded)];
    v.extend(r.compared.iter().map(|c| {
        let who = c
            .path
            .as_ref()
            .map_or("compared build".to_string(), |path| format!("{path} path"));
        (format!("{who} ({})", by(c.by_kernel)), &c.figures)
    }));
    v
}

/// The result table as text.
pub fn table(r: &Report) -> String {
    let mut s = format!(
        "{:<46} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9}\n",
        "small requests (µs), worker", "direct", "", "", "fwd", "", "", "fwd − dir"
    );
    s.push_str(&format!(
        "{:<46} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9}\n",
        "", "p50", "p95", "p99", "p50", "p95", "p99", "p50"
    ));
    for (worker, f) in workers(r) {
        for (kind, c) in [
            ("kept-alive", &f.keep_alive),
            ("new connection each", &f.per_connection),
        ] {
            s.push_str(&format!(
                "{:<46} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>+9.1}\n",
                format!("{kind}, {worker}"),
                c.direct.p50_us,
                c.direct.p95_us,
                c.direct.p99_us,
                c.forwarded.p50_us,
                c.forwarded.p95_us,
                c.forwarded.p99_us,
                c.difference.p50_us
            ));
        }
    }
    for (worker, f) in workers(r) {
        s.push_str(&format!(
            "fwd − direct p95 / p99, {worker}: kept-alive {:+.1} / {:+.1} µs, new connection \
             {:+.1} / {:+.1} µs\n",
            f.keep_alive.difference.p95_us,
            f.keep_alive.difference.p99_us,
            f.per_connection.difference.p95_us,
            f.per_connection.difference.p99_us
        ));
    }
    s.push('\n');
    for (worker, f) in workers(r) {
        s.push_str(&format!(
            "large transfer ({:.0} MiB), {worker}: direct {:.0} MB/s, forwarded {:.0} MB/s, \
             ratio {:.3}; at their best (p90) {:.0} and {:.0} MB/s, ratio {:.3}\n",
            f.throughput.bytes as f64 / (1 << 20) as f64,
            f.throughput.direct_mb_s,
            f.throughput.forwarded_mb_s,
            f.throughput.ratio,
            f.throughput.direct_best_mb_s,
            f.throughput.forwarded_best_mb_s,
            f.throughput.best_ratio
        ));
    }
    s
}

/// The issue's goals, checked for each worker.
pub fn goals(r: &Report) -> String {
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    let mut s = String::new();
    for (worker, f) in workers(r) {
        let (ka, pc) = (
            f.keep_alive.difference.p50_us,
            f.per_connection.difference.p50_us,
        );
        s.push_str(&format!(
            "- {worker}, latency, p50 forwarded − direct: kept-alive {ka:+.1} µs, new connection \
             {pc:+.1} µs (goal: within {:.0} µs) — {}\n\
             - {worker}, throughput, forwarded / direct: {:.3} (median), {:.3} (each at its \
             best, p90) (goal: at least {:.2}, both) — {}\n",
            r.goal_latency_us,
            verdict(ka <= r.goal_latency_us && pc <= r.goal_latency_us),
            f.throughput.ratio,
            f.throughput.best_ratio,
            r.goal_throughput_ratio,
            verdict(
                f.throughput.ratio >= r.goal_throughput_ratio
                    && f.throughput.best_ratio >= r.goal_throughput_ratio
            )
        ));
    }
    s
}

/// The series of the charts: direct, then each worker's forwarding.
fn series(r: &Report) -> Vec<String> {
    let mut v = vec!["direct".to_string()];
    v.extend(workers(r).iter().map(|(w, _)| format!("forwarded, {w}")));
    v
}

/// Latency percentiles of both kinds of request, direct and forwarded side by side.
pub fn latency_chart(r: &Report) -> String {
    let mut groups = Vec::new();
    type Pick = fn(&Forwarding) -> &LatencyComparison;
    let kinds: [(&str, Pick); 2] = [
        ("kept-alive", |f| &f.keep_alive),
        ("new conn.", |f| &f.per_connection),
    ];
    type Of = fn(&Percentiles) -> f64;
    let ps: [(&str, Of); 3] = [
        ("p50", |p| p.p50_us),
        ("p95", |p| p.p95_us),
        ("p99", |p| p.p99_us),
    ];
    for (kind, pick) in kinds {
        for (p, of) in ps {
            let mut values = vec![of(&pick(&r.forwarded).direct)];
            values.extend(workers(r).iter().map(|(_, f)| of(&pick(f).forwarded)));
            groups.push(Group {
                label: format!("{kind} {p}"),
                values,
            });
        }
    }
    BarChart {
        title: format!(
            "Small request latency ({} B file), medians of {} rounds (µs, lower is better)",
            r.small_bytes, r.rounds
        ),
        unit: "µs".into(),
        series: series(r),
        groups,
    }
    .render()
}

/// Throughput of the large transfer, direct and forwarded.
pub fn throughput_chart(r: &Report) -> String {
    let mut values = vec![r.forwarded.throughput.direct_mb_s];
    values.extend(workers(r).iter().map(|(_, f)| f.throughput.forwarded_mb_s));
    BarChart {
        title: format!(
            "Large transfer ({:.0} MiB), median of {} rounds (MB/s, higher is better)",
            r.forwarded.throughput.bytes as f64 / (1 << 20) as f64,
            r.rounds
        ),
        unit: "MB/s".into(),
        series: series(r),
        groups: vec![Group {
            label: "large file".into(),
            values,
        }],
    }
    .render()
}

fn write_outputs(r: &Report, out: &Path) -> Result<()> {
    let json = serde_json::to_string_pretty(r)
        .map_err(|e| Error::io(out.join("results.json"), std::io::Error::other(e)))?;
    provenance::write(out, "results.json", &json)?;
    provenance::write(out, "forward.svg", &latency_chart(r))?;
    provenance::write(out, "throughput.svg", &throughput_chart(r))?;
    let readme = format!(
        "# pico bench forward\n\n\
         What the worker's forwarding of a tenant's public port costs its clients. One nginx \
         ({server}; one worker process, `sendfile on`, files on a tmpfs) runs as the tenant of a \
         real `pico worker run` (**forwarded**: client → the tenant's public port → the kernel, \
         over the tenant's link into its network namespace (DNAT, or routed with no address \
         rewritten where the worker is told so) → nginx, labelled `kernel`; or, \
         for a build or worker that does not forward in the kernel, labelled `relay`, the \
         worker's listener → a socket it made inside the namespace → nginx), the same nginx with the \
         same configuration and files runs directly on the host (**direct**). Both measured in \
         the same run by the same hand-written client, in {rounds} rounds alternating direct and \
         forwarded (and which goes first).{compared}\n\n\
         - **small requests**: a {small} B file, {requests} timed requests per round and side \
           after {warmup} untimed ones, one at a time, on one kept-alive connection (request's \
           first byte to answer's last) and with a new connection each (connect to last byte). \
           p50/p95/p99 per round; shown: medians over the rounds, and forwarded − direct as the \
           median of the rounds' differences.\n\
         - **large transfer**: the {large:.0} MiB file {transfers} times per round and side, \
           the sides taking turns, each on a fresh connection, connect to last byte; MB/s = 10^6 \
           bytes/s; ratio = median of the ratios forwarded / direct of transfers made one after \
           the other; and each side at its best, the 90th percentile of its transfers (a direct \
           transfer over the loopback here falls to 2-4 GB/s in about a quarter of the runs, far \
           more often than a forwarded one, which lifts the median ratio: the goal asks both).\n\n\
         The machine runs the client, the worker and nginx on the same cores (and other work \
         beside them): forwarding's CPU competes with both ends, as on a busy host.\n\n\
         ## Results\n\n```\n{table}```\n\n![latency](forward.svg)\n\n\
         ![throughput](throughput.svg)\n\n## Goals\n\n{goals}\n{prov}",
        server = r.server,
        compared = r.compared.as_ref().map_or(String::new(), |c| if let Some(path) = &c.path {
            format!(
                " **{path} path**: a second worker, of `{}`, told to take the kernel's {path} \
                 path (`kernel_forward_path = \"{path}\"`; routed: no address rewritten, NAT: \
                 DNAT into the link, the source masqueraded, DNAT again in the namespace), \
                 forwarding to a third copy of the tenant in the same rounds.",
                c.pico
            )
        } else {
            format!(
                " **Compared build**: a second worker, of `{}`, forwarding to a third copy of \
                 the tenant in the same rounds (before/after a change to the forwarding).",
                c.pico
            )
        }),
        rounds = r.rounds,
        small = r.small_bytes,
        requests = r.requests_per_round,
        transfers = r.transfers_per_round,
        warmup = r.warmup_requests,
        large = r.forwarded.throughput.bytes as f64 / (1 << 20) as f64,
        table = table(r),
        goals = goals(r),
        prov = r.provenance.markdown()
    );
    provenance::write(out, "README.md", &readme)
}
