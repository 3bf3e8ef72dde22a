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
//! The goal: forwarded within [`GOAL_LATENCY_US`] µs (p50) and within 5% of the direct
//! throughput ([`GOAL_THROUGHPUT_RATIO`]).
//!
//! Here: the run (the servers, the rounds, the report); [`figures`] turns the rounds into
//! percentiles and ratios, [`output`] into the table, the goals, the charts and the files.

pub mod client;
mod figures;
mod output;
pub mod server;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use tracing::info;
use worker::protocol::Request;
use worker::tenant::TenantSpec;

use self::figures::Samples;
pub use self::figures::{Forwarding, LatencyComparison, Percentiles, ThroughputComparison};
pub use self::output::{goals, table};
use self::server::{DirectServer, Site, LARGE_PATH, SMALL_PATH};
use crate::error::{Error, Result};
use crate::net::free_port;
use crate::provenance::Provenance;
use crate::restore::{wait_port, WorkerProc};

/// The goal: forwarded p50 latency at most this many µs above direct.
pub const GOAL_LATENCY_US: f64 = 50.0;
/// The goal: forwarded throughput at least this share of direct.
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

/// The forwarding of a second worker (`--compare-pico`, `--compare-path`).
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
    /// The second worker (`--compare-pico`, `--compare-path`), against the same direct runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compared: Option<Compared>,
    pub goal_latency_us: f64,
    pub goal_throughput_ratio: f64,
    pub server: String,
    pub provenance: Provenance,
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
    output::write_outputs(&report, &opts.out)?;
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
