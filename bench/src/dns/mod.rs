//! `pico bench dns`: how many queries per second the hub's DNS answers for known names, and its
//! latency at a rate it sustains.
//!
//! Every client of a tenant asks the hub first, so its DNS is on every new client's path. The
//! suite runs a real `pico hub run` whose record names N tenants ([`hub`]: no worker, no
//! wake-up, the DNS path alone) and loads it, each for the same time:
//! 1. with `dnsperf` ([`dnsperf`]), the usual tool for an authoritative server's queries/s
//!    (reported missing, not skipped in silence, when it is not installed);
//! 2. with our own generator ([`load`]): K closed-loop clients, queries/s and p50/p95/p99/max;
//! 3. with our generator paced open-loop at [`PACED_SHARE`] of the queries/s that dnsperf (or,
//!    without it, our closed loop) reached: the latency at that rate.
//!
//! The goal: at least [`GOAL_QPS`] queries/s. [`report`] writes results.json and a
//! README with provenance.

pub mod dnsperf;
pub mod hub;
pub mod load;
pub mod report;
pub mod udp;
pub mod wire;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::info;

use self::dnsperf::DnsperfFigures;
use self::hub::HubProc;
use self::load::{LoadFigures, Queries};
use crate::error::{Error, Result};
use crate::provenance::Provenance;

/// The goal, queries/s for known names.
pub const GOAL_QPS: f64 = 5000.0;
/// The paced run's rate, as a share of the most queries/s reached.
pub const PACED_SHARE: f64 = 0.8;
/// Seed of the names asked (reproducible runs).
const SEED: u64 = 0xd45;

#[derive(Clone, Debug)]
pub struct Options {
    /// The `pico` binary (to run the hub).
    pub pico: PathBuf,
    /// Scratch space (the hub's home and cold directory, its log); the caller removes it.
    pub work: PathBuf,
    /// Where results.json and README.md go.
    pub out: PathBuf,
    /// Known tenant names in the hub's record.
    pub names: usize,
    /// Length of each load run.
    pub run: Duration,
    /// Our generator's sockets (closed loop: clients with one query in flight each).
    pub concurrency: usize,
    /// Whether to run dnsperf (the test does not: it runs our generator only).
    pub dnsperf: bool,
}

/// The dnsperf run, or why there was none.
#[derive(Clone, Debug, Serialize)]
pub struct DnsperfRun {
    /// `ran`, `missing` (not installed) or `not asked` (`--no-dnsperf`).
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub figures: Option<DnsperfFigures>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meanwhile: Option<Meanwhile>,
}

/// The hub's side of one load run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Meanwhile {
    /// The hub's CPU, in cores (CPU seconds per second of the run).
    pub hub_cpu_cores: f64,
    /// Queries dropped at the hub's DNS socket, its receive buffer full (`None`: unknown).
    pub hub_socket_drops: Option<u64>,
    /// UDP datagrams dropped at any full receive buffer of the machine (the hub's, the load
    /// tool's, anyone's).
    pub udp_receive_drops: Option<u64>,
}

/// One run of our generator, and the hub meanwhile.
#[derive(Clone, Debug, Serialize)]
pub struct Measured {
    #[serde(flatten)]
    pub figures: LoadFigures,
    pub meanwhile: Meanwhile,
}

/// The paced run: what its rate came from, and what it measured.
#[derive(Clone, Debug, Serialize)]
pub struct Paced {
    /// `dnsperf` or `closed loop`: whose queries/s the rate is a share of.
    pub rate_from: String,
    pub share: f64,
    #[serde(flatten)]
    pub measured: Measured,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub names: usize,
    pub zone: String,
    /// Length of each load run.
    pub seconds: f64,
    pub dnsperf: DnsperfRun,
    pub closed_loop: Measured,
    pub paced: Paced,
    pub goal_qps: f64,
    /// The queries/s held against the goal: dnsperf's, or our closed loop's without it.
    pub goal_measured_by: String,
    pub goal_qps_reached: f64,
    pub goal_met: bool,
    /// Lines the hub logged over the whole run, and how many of them warnings or errors.
    pub hub_log_lines: usize,
    pub hub_log_warnings: usize,
    pub provenance: Provenance,
}

/// Runs the benchmark and writes its outputs into `opts.out`.
pub async fn run(opts: &Options) -> Result<Report> {
    if opts.names == 0 || opts.names > hub::MAX_NAMES {
        return Err(Error::BadOptions(format!(
            "--names must be 1..={}",
            hub::MAX_NAMES
        )));
    }
    if opts.concurrency == 0 || opts.run.is_zero() {
        return Err(Error::BadOptions(
            "--concurrency and --seconds must be above 0".into(),
        ));
    }
    let mut provenance = Provenance::collect(&[]);
    let version = dnsperf::version();
    provenance.tools.push(
        version
            .clone()
            .unwrap_or_else(|| "dnsperf: not found".into()),
    );
    let names: Vec<String> = (0..opts.names).map(hub::fqdn).collect();
    let queries = Arc::new(Queries::new(&names)?);

    let hub = HubProc::start(&opts.pico, &opts.work, opts.names).await?;
    info!(port = hub.dns_port, names = opts.names, "hub answers");
    let bar = crate::progress::bar(3, "dns");
    let port = hub.dns_port;

    bar.set_message("dnsperf");
    let dnsperf = match (opts.dnsperf, version) {
        (false, version) => DnsperfRun {
            status: "not asked".into(),
            version,
            command: None,
            figures: None,
            meanwhile: None,
        },
        (true, None) => DnsperfRun {
            status: "missing".into(),
            version: None,
            command: None,
            figures: None,
            meanwhile: None,
        },
        (true, Some(version)) => {
            let data = opts.work.join("dnsperf-names");
            dnsperf::write_data(&data, &names, SEED)?;
            let args = dnsperf::args(port, &data, opts.run);
            let meter = Meter::start(&hub);
            let figures = {
                let args = args.clone();
                tokio::task::spawn_blocking(move || dnsperf::run(&args))
                    .await
                    .map_err(|e| Error::Client(e.to_string()))??
            };
            info!(qps = figures.qps, lost = figures.lost, "dnsperf done");
            DnsperfRun {
                status: "ran".into(),
                version: Some(version),
                command: Some(format!("dnsperf {}", args.join(" "))),
                figures: Some(figures),
                meanwhile: Some(meter.read(&hub)),
            }
        }
    };
    bar.inc(1);

    bar.set_message("closed loop");
    let meter = Meter::start(&hub);
    let closed = load::closed_loop(port, queries.clone(), opts.concurrency, opts.run, SEED).await?;
    let closed_loop = Measured {
        meanwhile: meter.read(&hub),
        figures: closed,
    };
    info!(
        qps = closed_loop.figures.qps,
        p99_us = closed_loop.figures.p99_us,
        "closed loop done"
    );
    bar.inc(1);

    let (rate_from, best) = match &dnsperf.figures {
        Some(f) => ("dnsperf", f.qps),
        None => ("closed loop", closed_loop.figures.qps),
    };
    let rate = best * PACED_SHARE;
    bar.set_message(format!("paced at {rate:.0}/s"));
    let meter = Meter::start(&hub);
    let paced = load::paced(port, queries, opts.concurrency, rate, opts.run, SEED + 1).await?;
    let paced = Paced {
        rate_from: rate_from.into(),
        share: PACED_SHARE,
        measured: Measured {
            meanwhile: meter.read(&hub),
            figures: paced,
        },
    };
    info!(
        rate,
        p99_us = paced.measured.figures.p99_us,
        "paced run done"
    );
    bar.inc(1);
    bar.finish_and_clear();

    let log = hub.log.clone();
    drop(hub);
    let log_text = std::fs::read_to_string(&log).map_err(|e| Error::io(&log, e))?;
    let report = Report {
        names: opts.names,
        zone: hub::ZONE.into(),
        seconds: opts.run.as_secs_f64(),
        goal_qps: GOAL_QPS,
        goal_measured_by: rate_from.into(),
        goal_qps_reached: best,
        goal_met: best >= GOAL_QPS,
        dnsperf,
        closed_loop,
        paced,
        hub_log_lines: log_text.lines().count(),
        hub_log_warnings: log_text
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .count(),
        provenance,
    };
    report::write(&report, &opts.out)?;
    Ok(report)
}

/// The hub's CPU time and the machine's UDP drops from one moment on.
struct Meter {
    cpu_s: Option<f64>,
    hub_drops: Option<u64>,
    all_drops: Option<u64>,
    started: Instant,
}

impl Meter {
    fn start(hub: &HubProc) -> Meter {
        Meter {
            cpu_s: cpu_seconds(hub.pid()),
            hub_drops: udp::socket_drops(hub.dns_port),
            all_drops: udp::receive_buffer_errors(),
            started: Instant::now(),
        }
    }

    /// What happened since the start (CPU 0 if /proc could not be read).
    fn read(&self, hub: &HubProc) -> Meanwhile {
        let since = |before: Option<u64>, now: Option<u64>| Some(now?.saturating_sub(before?));
        Meanwhile {
            hub_cpu_cores: match (self.cpu_s, cpu_seconds(hub.pid())) {
                (Some(before), Some(now)) => {
                    (now - before) / self.started.elapsed().as_secs_f64().max(1e-9)
                }
                _ => 0.0,
            },
            hub_socket_drops: since(self.hub_drops, udp::socket_drops(hub.dns_port)),
            udp_receive_drops: since(self.all_drops, udp::receive_buffer_errors()),
        }
    }
}

/// User and system CPU seconds of process `pid` so far (`/proc/PID/stat`).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (per_second > 0).then(|| ticks / per_second as f64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn our_own_cpu_time_is_read() {
        let burn = std::time::Instant::now();
        let mut x = 0u64;
        while burn.elapsed() < std::time::Duration::from_millis(50) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        let s = super::cpu_seconds(std::process::id()).unwrap();
        assert!(s > 0.0, "{s}");
    }
}
