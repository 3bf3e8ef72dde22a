//! `pico bench store`: what the page store costs per byte, against the tools an operator knows.
//!
//! - **ingest**: logical MB/s of page files into a fresh store (cold tier a directory, local tier
//!   on), against [`baseline`] (`b3sum` + `lz4` over the same files) measured in the same run,
//!   alternating with it run by run; then a **re-ingest** of the same images (every page already
//!   known: no compression, no pack upload, only a manifest) and an ingest into Garage (S3).
//! - **reads**: the whole of every image back through each tier ([`tiers`]): memory, local,
//!   cold directory, cold S3 (Garage on loopback), and cold S3 behind [`crate::latency_proxy`]
//!   (a remote object store's delay and bandwidth); cold GETs per GiB restored.
//!
//! Inputs ([`inputs`]): a synthetic mix and real CRIU checkpoints.

pub mod baseline;
pub mod inputs;
mod report;
pub mod tiers;

pub use report::{chart, goals, table};

use std::path::{Path, PathBuf};
use std::time::Instant;

use pagestore::config::ColdConfig;
use pagestore::ingest::IngestReport;
use pagestore::{PageStore, StoreConfig};
use serde::Serialize;
use tracing::info;
use worker::criu::Criu;

use self::baseline::BaselineTimes;
use self::inputs::Input;
use self::tiers::{Source, TierRead};
use crate::error::{Error, Result};
use crate::garage::GarageServer;
use crate::latency_proxy::{LatencyProxy, LinkModel};
use crate::provenance::Provenance;
use crate::restore::{median, App};

/// The goal: ingest within this factor of the b3sum + lz4 baseline.
pub const GOAL_RATIO: f64 = 1.3;

#[derive(Clone, Debug)]
pub struct Options {
    /// Where results.json, store.svg and README.md go.
    pub out: PathBuf,
    /// Scratch space (images, stores, Garage); the caller removes it.
    pub work: PathBuf,
    /// The repository (deploy/apps, deploy/garage.sh).
    pub repo: PathBuf,
    pub criu: PathBuf,
    /// Apps checkpointed with CRIU as real inputs.
    pub apps: Vec<App>,
    /// Heap of the large-heap app, MiB.
    pub heap_mb: u32,
    /// Size of the synthetic image, MiB (0: none).
    pub synthetic_mib: u64,
    /// Measured runs of each ingest and read (the median is reported).
    pub runs: usize,
    /// The network between the store and the remote S3 tier.
    pub link: LinkModel,
}

/// One ingest of every input (or of one input), median over the runs.
#[derive(Clone, Debug, Default, Serialize)]
pub struct IngestFigures {
    pub logical_bytes: u64,
    pub seconds: f64,
    /// logical_bytes / seconds, MB/s (10^6).
    pub mb_s: f64,
    pub pages_total: u64,
    pub pages_zero: u64,
    pub pages_known: u64,
    pub pages_new: u64,
    /// Bytes handed to the compressor (new pages only).
    pub bytes_compressed: u64,
    /// Packs and manifests uploaded to the cold tier.
    pub bytes_uploaded: u64,
    pub packs_written: u64,
    pub samples_s: Vec<f64>,
}

impl IngestFigures {
    fn add_report(&mut self, r: &IngestReport) {
        self.add(&IngestFigures {
            logical_bytes: r.logical_bytes,
            pages_total: r.pages_total,
            pages_zero: r.pages_zero,
            pages_known: r.pages_known,
            pages_new: r.pages_new,
            bytes_compressed: r.bytes_compressed,
            bytes_uploaded: r.bytes_uploaded,
            packs_written: r.packs_written as u64,
            ..IngestFigures::default()
        });
    }

    /// Adds another input's totals (for the all-inputs row).
    fn add(&mut self, other: &IngestFigures) {
        self.logical_bytes += other.logical_bytes;
        self.pages_total += other.pages_total;
        self.pages_zero += other.pages_zero;
        self.pages_known += other.pages_known;
        self.pages_new += other.pages_new;
        self.bytes_compressed += other.bytes_compressed;
        self.bytes_uploaded += other.bytes_uploaded;
        self.packs_written += other.packs_written;
    }

    fn finish(mut self, samples: Vec<f64>) -> Self {
        self.seconds = median(&samples);
        self.mb_s = mb_s(self.logical_bytes, self.seconds);
        self.samples_s = samples;
        self
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct BaselineFigures {
    pub logical_bytes: u64,
    /// Medians over the runs.
    pub b3sum_s: f64,
    pub lz4_s: f64,
    pub seconds: f64,
    pub mb_s: f64,
    pub samples_s: Vec<f64>,
}

impl BaselineFigures {
    fn from_runs(logical_bytes: u64, runs: &[BaselineTimes]) -> Self {
        let pick = |f: fn(&BaselineTimes) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        let seconds = pick(|t| t.total_s);
        BaselineFigures {
            logical_bytes,
            b3sum_s: pick(|t| t.b3sum_s),
            lz4_s: pick(|t| t.lz4_s),
            seconds,
            mb_s: mb_s(logical_bytes, seconds),
            samples_s: runs.iter().map(|t| t.total_s).collect(),
        }
    }
}

/// Ingest and baseline of one input.
#[derive(Clone, Debug, Serialize)]
pub struct InputResult {
    pub input: Input,
    pub ingest: IngestFigures,
    pub reingest: IngestFigures,
    pub baseline: BaselineFigures,
    /// ingest seconds / baseline seconds.
    pub ingest_to_baseline: f64,
}

/// Every tier's read of all images.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TierReads {
    pub hot: TierRead,
    pub local: TierRead,
    pub cold_dir: TierRead,
    pub cold_s3: TierRead,
    /// Cold S3 behind the latency proxy.
    pub cold_s3_remote: TierRead,
}

#[derive(Clone, Debug, Serialize)]
pub struct LinkFigures {
    pub delay_ms: u64,
    pub mb_s_per_connection: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub runs: usize,
    pub inputs: Vec<InputResult>,
    /// All inputs together.
    pub ingest: IngestFigures,
    pub reingest: IngestFigures,
    pub baseline: BaselineFigures,
    pub baseline_command: String,
    /// ingest seconds / baseline seconds, all inputs (goal: <= 1.3).
    pub ingest_to_baseline: f64,
    /// The same ingest into a store without a local tier (only time and rate are filled in):
    /// the difference is what caching the new pages in the local tier costs.
    pub ingest_without_local: IngestFigures,
    /// The ingest of all inputs until the local tier holds every new page (only time and rate
    /// are filled in): an ingest returns at its durable commit (`ingest`) and caches the new
    /// pages in the local tier behind it.
    pub ingest_local_populated: IngestFigures,
    /// The local tier's engine (`sled` or `fjall`).
    pub local_engine: String,
    /// Ingest of all inputs into a fresh store on Garage (S3 on loopback), one run.
    pub ingest_s3: IngestFigures,
    pub reads: TierReads,
    /// Cold-tier requests per GiB of logical image restored from S3.
    pub cold_gets_per_gib: f64,
    pub remote_link: LinkFigures,
    pub provenance: Provenance,
}

fn mb_s(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / seconds.max(1e-9) / 1e6
}

fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(path, e)),
        _ => Ok(()),
    }
}

/// A store under `home` with `cold`, and a memory tier large enough for every image.
fn store_config(home: &Path, cold: Option<ColdConfig>, hot_bytes: u64) -> StoreConfig {
    let mut config = StoreConfig::embedded(home);
    if let Some(cold) = cold {
        config.cold = cold;
    }
    config.hot.max_bytes = hot_bytes;
    config
}

/// The `[cold]` section `deploy/garage.sh` printed, parsed.
fn parse_cold(toml_text: &str) -> Result<ColdConfig> {
    #[derive(serde::Deserialize)]
    struct Doc {
        cold: ColdConfig,
    }
    toml::from_str::<Doc>(toml_text)
        .map(|d| d.cold)
        .map_err(|e| Error::Step("parsing Garage's [cold] section".into(), e.to_string()))
}

/// Reads every page file once, so that neither side of the comparison pays for the disk.
fn warm_page_cache(inputs: &[Input]) -> Result<()> {
    for f in inputs.iter().flat_map(|i| &i.page_files) {
        std::fs::read(f).map_err(|e| Error::io(f, e))?;
    }
    Ok(())
}

/// Ingests `input` as its tenant's next checkpoint; the report and the wall-clock seconds.
async fn timed_ingest(store: &PageStore, input: &Input) -> Result<(IngestReport, f64)> {
    let started = Instant::now();
    let report = store
        .ingest_with(&input.name, &input.dir, &criu_image::ingest_options())
        .await?;
    Ok((report, started.elapsed().as_secs_f64()))
}

/// Runs the benchmark and writes its outputs into `opts.out`.
pub async fn run(opts: &Options) -> Result<Report> {
    if opts.apps.is_empty() && opts.synthetic_mib == 0 {
        return Err(Error::BadOptions(
            "nothing to ingest: give --apps or --synthetic-mib".into(),
        ));
    }
    let runs = opts.runs.max(1);
    let provenance = Provenance::collect(&[
        ("criu", &["--version"]),
        ("b3sum", &["--version"]),
        ("lz4", &["--version"]),
        ("garage", &["--version"]),
    ]);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let inputs = prepare_inputs(opts).await?;
    let logical: u64 = inputs.iter().map(|i| i.logical_bytes).sum();
    let hot_bytes = logical + (64 << 20);
    let home = opts.work.join("store-dir");
    let timed = ingest_runs(opts, &inputs, runs, threads, hot_bytes, &home).await?;
    let local_engine = store_config(&home, None, hot_bytes)
        .local
        .engine
        .to_string();

    // Reads from memory, local and the cold directory, on the store of the last run.
    let manifest_refs: Vec<&pagestore::Manifest> =
        timed.manifests.iter().map(|m| m.as_ref()).collect();
    let ids = tiers::stored_pages(&manifest_refs);
    let mut reads = TierReads::default();
    info!(pages = ids.len(), "reading back through each tier");
    reads.hot = tiers::measure(&timed.store, &ids, Source::Hot, runs, logical).await?;
    reads.local = tiers::measure(&timed.store, &ids, Source::Local, runs, logical).await?;
    reads.cold_dir = tiers::measure(&timed.store, &ids, Source::Cold, runs, logical).await?;
    let summary = timed.summarize(inputs, logical, runs);
    remove(&home)?;

    let ingest_s3 = s3_figures(opts, &summary.results, &ids, runs, hot_bytes, &mut reads).await?;
    let report = Report {
        runs,
        ingest_to_baseline: summary.ingest.seconds / summary.baseline.seconds.max(1e-9),
        inputs: summary.results,
        ingest: summary.ingest,
        reingest: summary.reingest,
        baseline: summary.baseline,
        baseline_command: baseline::describe(threads),
        ingest_s3,
        ingest_without_local: summary.ingest_without_local,
        ingest_local_populated: summary.ingest_local_populated,
        local_engine,
        cold_gets_per_gib: reads.cold_s3.cold_gets_per_gib,
        reads,
        remote_link: LinkFigures {
            delay_ms: opts.link.delay.as_millis() as u64,
            mb_s_per_connection: opts.link.bytes_per_sec / 1_000_000,
        },
        provenance,
    };
    report::write_outputs(&report, &opts.out)?;
    Ok(report)
}

/// The images to ingest: the synthetic one and a checkpoint of each app, in the page cache.
async fn prepare_inputs(opts: &Options) -> Result<Vec<Input>> {
    let images = opts.work.join("images");
    let mut inputs = Vec::new();
    if opts.synthetic_mib > 0 {
        inputs.push(inputs::synthetic(&images, opts.synthetic_mib)?);
    }
    if !opts.apps.is_empty() {
        let criu = Criu::detect(&opts.criu, 2).await.map_err(|e| Error::Criu {
            tenant: "(none yet)".into(),
            source: Box::new(e),
        })?;
        for &app in &opts.apps {
            info!(app = app.name(), "checkpointing");
            inputs.push(inputs::criu_image(&criu, &images, &opts.repo, app, opts.heap_mb).await?);
        }
    }
    warm_page_cache(&inputs)?;
    Ok(inputs)
}

/// What the alternating runs of ingest and baseline measured: per input (index as in the
/// inputs) and in total per run, with the last run's figures, manifests and store.
struct TimedRuns {
    baseline_runs: Vec<Vec<BaselineTimes>>,
    ingest_s: Vec<Vec<f64>>,
    reingest_s: Vec<Vec<f64>>,
    ingest_fig: Vec<IngestFigures>,
    reingest_fig: Vec<IngestFigures>,
    total_ingest: Vec<f64>,
    total_reingest: Vec<f64>,
    total_no_local: Vec<f64>,
    total_populated: Vec<f64>,
    manifests: Vec<std::sync::Arc<pagestore::Manifest>>,
    /// The last run's store (directory cold tier, local tier at `home`).
    store: PageStore,
}

/// The figures of [`TimedRuns`], per input and over all.
struct Summary {
    results: Vec<InputResult>,
    ingest: IngestFigures,
    reingest: IngestFigures,
    baseline: BaselineFigures,
    ingest_without_local: IngestFigures,
    ingest_local_populated: IngestFigures,
}

/// Ingest and baseline, alternating run by run so that both see the same machine: each run
/// times the baseline, an ingest into a fresh store at `home`, a re-ingest of the same inputs,
/// and an ingest into a store without local tier.
async fn ingest_runs(
    opts: &Options,
    inputs: &[Input],
    runs: usize,
    threads: usize,
    hot_bytes: u64,
    home: &Path,
) -> Result<TimedRuns> {
    let n = inputs.len();
    let mut baseline_runs = vec![Vec::new(); n];
    let mut ingest_s = vec![Vec::new(); n];
    let mut reingest_s = vec![Vec::new(); n];
    let mut ingest_fig = vec![IngestFigures::default(); n];
    let mut reingest_fig = vec![IngestFigures::default(); n];
    let (mut total_ingest, mut total_reingest) = (vec![], vec![]);
    let mut total_no_local = vec![];
    let mut total_populated = vec![];
    let no_local_home = opts.work.join("store-dir-no-local");
    let mut manifests = Vec::new();
    let mut dir_store = None;
    let bar = crate::progress::runs(runs as u64, "store runs");
    for run in 0..runs {
        bar.at(run as u64);
        info!(run, "ingest and baseline");
        for (i, input) in inputs.iter().enumerate() {
            baseline_runs[i].push(baseline::measure(&input.page_files, threads)?);
        }
        remove(home)?;
        let store = PageStore::open(&store_config(home, None, hot_bytes)).await?;
        let last = run + 1 == runs;
        let mut sum = 0.0;
        let started = Instant::now();
        for (i, input) in inputs.iter().enumerate() {
            let (report, secs) = timed_ingest(&store, input).await?;
            sum += secs;
            ingest_s[i].push(secs);
            if last {
                ingest_fig[i].add_report(&report);
                manifests.extend(report.manifest.clone());
            }
        }
        total_ingest.push(sum);
        // The new pages are cached in the local tier behind each commit: until when.
        store.local_settled().await?;
        total_populated.push(started.elapsed().as_secs_f64());
        let mut sum = 0.0;
        for (i, input) in inputs.iter().enumerate() {
            let (report, secs) = timed_ingest(&store, input).await?;
            sum += secs;
            reingest_s[i].push(secs);
            if last {
                reingest_fig[i].add_report(&report);
            }
        }
        total_reingest.push(sum);
        // The same ingest without the local tier: what caching new pages locally costs.
        remove(&no_local_home)?;
        let mut config = store_config(&no_local_home, None, hot_bytes);
        config.local.enabled = false;
        let plain = PageStore::open(&config).await?;
        let mut sum = 0.0;
        for input in inputs {
            sum += timed_ingest(&plain, input).await?.1;
        }
        drop(plain);
        remove(&no_local_home)?;
        total_no_local.push(sum);
        if last {
            dir_store = Some(store);
        }
    }
    Ok(TimedRuns {
        baseline_runs,
        ingest_s,
        reingest_s,
        ingest_fig,
        reingest_fig,
        total_ingest,
        total_reingest,
        total_no_local,
        total_populated,
        manifests,
        store: dir_store.ok_or_else(|| Error::BadOptions("no runs".into()))?,
    })
}

impl TimedRuns {
    /// The figures per input (taking the inputs) and over all `logical` bytes, for `runs`
    /// runs; the store is closed.
    fn summarize(self, inputs: Vec<Input>, logical: u64, runs: usize) -> Summary {
        let mut results = Vec::with_capacity(inputs.len());
        let (mut all_ingest, mut all_reingest) =
            (IngestFigures::default(), IngestFigures::default());
        for (i, input) in inputs.into_iter().enumerate() {
            let ingest = self.ingest_fig[i].clone().finish(self.ingest_s[i].clone());
            let reingest = self.reingest_fig[i]
                .clone()
                .finish(self.reingest_s[i].clone());
            let baseline = BaselineFigures::from_runs(input.logical_bytes, &self.baseline_runs[i]);
            all_ingest.add(&ingest);
            all_reingest.add(&reingest);
            results.push(InputResult {
                ingest_to_baseline: ingest.seconds / baseline.seconds.max(1e-9),
                input,
                ingest,
                reingest,
                baseline,
            });
        }
        let ingest_without_local = IngestFigures {
            logical_bytes: all_ingest.logical_bytes,
            ..Default::default()
        }
        .finish(self.total_no_local);
        let ingest_local_populated = IngestFigures {
            logical_bytes: all_ingest.logical_bytes,
            ..Default::default()
        }
        .finish(self.total_populated);
        let all_runs: Vec<BaselineTimes> = (0..runs)
            .map(|r| {
                let mut t = BaselineTimes::default();
                for per in &self.baseline_runs {
                    t.b3sum_s += per[r].b3sum_s;
                    t.lz4_s += per[r].lz4_s;
                    t.total_s += per[r].total_s;
                }
                t
            })
            .collect();
        Summary {
            results,
            ingest: all_ingest.finish(self.total_ingest),
            reingest: all_reingest.finish(self.total_reingest),
            baseline: BaselineFigures::from_runs(logical, &all_runs),
            ingest_without_local,
            ingest_local_populated,
        }
    }
}

/// S3: the inputs of `results` ingested into a Garage on loopback, the pages `ids` read back
/// from it (into `reads.cold_s3`) and from the same Garage behind the latency proxy
/// (`reads.cold_s3_remote`). Returns the ingest's figures.
async fn s3_figures(
    opts: &Options,
    results: &[InputResult],
    ids: &[pagestore::PageId],
    runs: usize,
    hot_bytes: u64,
    reads: &mut TierReads,
) -> Result<IngestFigures> {
    let logical: u64 = results.iter().map(|r| r.input.logical_bytes).sum();
    let garage = GarageServer::start(&opts.repo, &opts.work.join("garage"))?;
    let s3_home = opts.work.join("store-s3");
    let store = PageStore::open(&store_config(
        &s3_home,
        Some(parse_cold(&garage.cold_toml)?),
        hot_bytes,
    ))
    .await?;
    let mut ingest_s3 = IngestFigures::default();
    let started = Instant::now();
    for input in results.iter().map(|r| &r.input) {
        let report = store
            .ingest_with(&input.name, &input.dir, &criu_image::ingest_options())
            .await?;
        ingest_s3.add_report(&report);
    }
    let ingest_s3 = ingest_s3.finish(vec![started.elapsed().as_secs_f64()]);
    reads.cold_s3 = tiers::measure(&store, ids, Source::Cold, runs, logical).await?;
    drop(store);
    remove(&s3_home)?;
    let proxy = LatencyProxy::start(
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        garage.s3,
        opts.link,
    )
    .await
    .map_err(|e| Error::io("latency proxy", e))?;
    let remote_home = opts.work.join("store-s3-remote");
    let store = PageStore::open(&store_config(
        &remote_home,
        Some(parse_cold(&garage.cold_toml_via(proxy.addr()))?),
        hot_bytes,
    ))
    .await?;
    reads.cold_s3_remote = tiers::measure(&store, ids, Source::Cold, runs, logical).await?;
    drop(store);
    remove(&remote_home)?;
    drop(proxy);
    drop(garage);
    Ok(ingest_s3)
}
