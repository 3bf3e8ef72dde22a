//! `pico bench nbd`: our NBD server against `nbdkit file` on the same raw image, both warm.
//!
//! The image is a real CRIU `pages-*.img` (or, without one, a synthetic image with a realistic mix
//! of zero and data pages), padded to a few hundred MiB with zero pages, the way a sparse memory
//! image looks. It is written out as a plain (non-sparse) file for nbdkit, whose page cache is
//! warmed first, and ingested into a scratch store for us, whose page cache is filled before
//! measuring. Then, per server: `nbdcopy` to `null:` (throughput), 4 KiB random reads one at a time
//! (p50/p99 latency), and with 16 in flight on one connection (IOPS). Ratios are ours / nbdkit's.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pager::nbd::{ExportOptions, ExportSpec, ExportTable, NbdServer};
use pagestore::{PageStore, StoreConfig, PAGE_SIZE};
use serde::Serialize;
use tracing::info;

use crate::error::{Error, Result};
use crate::nbdclient::Client;

const BLOCK: u32 = 4096;

/// What to measure.
#[derive(Clone, Debug)]
pub struct NbdBenchOptions {
    /// A raw page file to serve (e.g. a CRIU `pages-1.img`); `None`: a synthetic one.
    pub image: Option<PathBuf>,
    /// Size the image is padded to with zero pages, in MiB.
    pub size_mib: u64,
    /// Scratch directory; a temporary one if `None`.
    pub workdir: Option<PathBuf>,
    /// Requests at queue depth 1.
    pub qd1_requests: usize,
    /// Seconds of queue depth 16.
    pub qd16_secs: f64,
    /// nbdcopy runs per server (the median is reported).
    pub copy_runs: usize,
}

impl Default for NbdBenchOptions {
    fn default() -> Self {
        NbdBenchOptions {
            image: None,
            size_mib: 256,
            workdir: None,
            qd1_requests: 20_000,
            qd16_secs: 3.0,
            copy_runs: 5,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ImageInfo {
    /// Where the data pages came from.
    pub source: String,
    pub bytes: u64,
    pub data_pages: u64,
    pub zero_pages: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ServerFigures {
    /// nbdcopy to `null:`, median of the runs, MiB/s.
    pub nbdcopy_mib_s: f64,
    pub qd1_p50_us: f64,
    pub qd1_p99_us: f64,
    pub qd16_iops: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Ratios {
    /// ours / nbdkit: higher is better (goal >= 1.0).
    pub throughput: f64,
    /// ours / nbdkit: lower is better (goal <= 1.2).
    pub qd1_p50_latency: f64,
    pub qd1_p99_latency: f64,
    /// ours / nbdkit: higher is better.
    pub qd16_iops: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct NbdBenchReport {
    pub image: ImageInfo,
    pub ours: ServerFigures,
    pub nbdkit: ServerFigures,
    pub ratios: Ratios,
    pub nbdkit_version: String,
}

fn tool(tool: &'static str, package: &'static str, reason: impl ToString) -> Error {
    Error::Tool {
        tool,
        package,
        reason: reason.to_string(),
    }
}

/// Builds the raw image: the source's pages, then zero pages up to `size` bytes.
fn build_image(opts: &NbdBenchOptions, path: &Path) -> Result<ImageInfo> {
    let (mut data, source) = match &opts.image {
        Some(p) => (
            std::fs::read(p).map_err(|e| Error::io(p, e))?,
            format!("{} (given with --image)", p.display()),
        ),
        None => (
            crate::synth::sparse_image(10 << 20),
            "synthetic: 10 MiB, 2% zero pages".to_string(),
        ),
    };
    let size = (opts.size_mib << 20).max(data.len() as u64);
    let size = size.div_ceil(PAGE_SIZE as u64) * PAGE_SIZE as u64;
    data.resize(size as usize, 0);
    let zero_pages = data
        .chunks(PAGE_SIZE)
        .filter(|p| pagestore::page::is_zero(p))
        .count() as u64;
    std::fs::write(path, &data).map_err(|e| Error::io(path, e))?;
    Ok(ImageInfo {
        source,
        bytes: size,
        data_pages: size / PAGE_SIZE as u64 - zero_pages,
        zero_pages,
    })
}

struct Nbdkit(Child);

impl Drop for Nbdkit {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_nbdkit(image: &Path, port: u16) -> Result<Nbdkit> {
    let child = Command::new("nbdkit")
        .args(["-f", "-r", "--exit-with-parent", "-i", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .arg("file")
        .arg(image)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| tool("nbdkit", "nbdkit", e))?;
    let guard = Nbdkit(child);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            return Err(tool("nbdkit", "nbdkit", "did not start listening in 10 s"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(guard)
}

fn nbdcopy_once(uri: &str) -> Result<Duration> {
    let t = Instant::now();
    let out = Command::new("nbdcopy")
        .arg(uri)
        .arg("null:")
        .output()
        .map_err(|e| tool("nbdcopy", "libnbd-bin", e))?;
    if !out.status.success() {
        return Err(tool(
            "nbdcopy",
            "libnbd-bin",
            format!("{uri}: {}", String::from_utf8_lossy(&out.stderr)),
        ));
    }
    Ok(t.elapsed())
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e6)
}

/// One server under test.
struct Target {
    uri: String,
    client: Client,
    copies: Vec<Duration>,
    latencies: Vec<Duration>,
    qd16: Vec<u64>,
}

impl Target {
    fn new(addr: SocketAddr, export: &str) -> Result<Target> {
        Ok(Target {
            uri: format!("nbd://{addr}/{export}"),
            client: Client::connect(addr, export)?,
            copies: Vec::new(),
            latencies: Vec::new(),
            qd16: Vec::new(),
        })
    }

    fn figures(mut self, bytes: u64) -> ServerFigures {
        self.copies.sort();
        self.latencies.sort();
        self.qd16.sort();
        let median = self.copies[self.copies.len() / 2];
        let iops = self.qd16[self.qd16.len() / 2];
        self.client.disconnect();
        ServerFigures {
            nbdcopy_mib_s: bytes as f64 / (1 << 20) as f64 / median.as_secs_f64(),
            qd1_p50_us: percentile(&self.latencies, 0.50),
            qd1_p99_us: percentile(&self.latencies, 0.99),
            qd16_iops: iops,
        }
    }
}

/// Measures both servers, alternating between them round by round so that background noise
/// (other processes, writeback) falls on both alike. Blocking: run it off the async runtime.
fn measure(targets: &mut [Target; 2], opts: &NbdBenchOptions) -> Result<()> {
    const ROUNDS: usize = 4;
    for t in targets.iter_mut() {
        nbdcopy_once(&t.uri)?; // warm-up
        t.client.latencies(2_000, BLOCK, 7)?;
    }
    for _ in 0..opts.copy_runs.max(1) {
        for t in targets.iter_mut() {
            t.copies.push(nbdcopy_once(&t.uri)?);
        }
    }
    for round in 0..ROUNDS {
        for t in targets.iter_mut() {
            let n = opts.qd1_requests.div_ceil(ROUNDS);
            let lat = t.client.latencies(n, BLOCK, 11 + round as u64)?;
            t.latencies.extend(lat);
        }
    }
    for round in 0..ROUNDS {
        for t in targets.iter_mut() {
            let secs = Duration::from_secs_f64(opts.qd16_secs / ROUNDS as f64);
            t.qd16
                .push(t.client.pipelined(16, BLOCK, secs, 13 + round as u64)?);
        }
    }
    Ok(())
}

fn nbdkit_version() -> String {
    Command::new("nbdkit")
        .arg("--version")
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default()
}

/// Runs the whole suite. Call from a multi-threaded tokio runtime: our server runs on it while
/// the clients run on blocking threads.
pub async fn run(opts: &NbdBenchOptions) -> Result<NbdBenchReport> {
    let scratch = tempfile::Builder::new()
        .prefix("pico-bench-nbd-")
        .tempdir_in(opts.workdir.clone().unwrap_or_else(std::env::temp_dir))
        .map_err(|e| Error::io("scratch directory", e))?;
    let dir = scratch.path().join("img");
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let image_path = dir.join("pages-1.img");
    let image = {
        let (o, p) = (opts.clone(), image_path.clone());
        tokio::task::spawn_blocking(move || build_image(&o, &p))
            .await
            .map_err(|e| Error::Client(e.to_string()))??
    };
    info!(bytes = image.bytes, zero = image.zero_pages, "image built");

    // Ours: ingest into a scratch store, fill the page cache, serve on loopback.
    let mut config = StoreConfig::embedded(&scratch.path().join("home"));
    // The memory tier holds every data page decoded: it is what serves the exports.
    config.hot.max_bytes = config
        .hot
        .max_bytes
        .max((image.data_pages + 1024) * PAGE_SIZE as u64);
    let store = Arc::new(PageStore::open(&config).await?);
    let checkpoint = store
        .ingest_with("bench", &dir, &criu_image::ingest_options())
        .await?
        .checkpoint;
    let spec = ExportSpec {
        checkpoint: checkpoint.id.to_string(),
        file: Some("pages-1.img".into()),
    };
    let options = ExportOptions { writable: false };
    let table = ExportTable::open(store, &[spec], &options).await?;
    table.warm().await?;
    let server = NbdServer::bind(
        "127.0.0.1:0"
            .parse()
            .map_err(|_| Error::Client("addr".into()))?,
        Arc::new(table),
    )
    .await?;
    let ours_addr = server.local_addr()?;
    let ours_task = tokio::spawn(server.run());
    let export = format!("{}/pages-1.img", checkpoint.id);

    // nbdkit: the same bytes as a plain file, in the page cache.
    let _ = std::fs::read(&image_path).map_err(|e| Error::io(&image_path, e))?;
    let port = crate::net::free_port()?;
    let nbdkit = start_nbdkit(&image_path, port)?;
    let kit_addr = SocketAddr::from(([127, 0, 0, 1], port));

    // Let the image and the store settle on disk before measuring.
    let _ = Command::new("sync").status();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let bytes = image.bytes;
    let o = opts.clone();
    let (ours, nbdkit_figures) = tokio::task::spawn_blocking(move || -> Result<_> {
        let mut targets = [Target::new(ours_addr, &export)?, Target::new(kit_addr, "")?];
        measure(&mut targets, &o)?;
        let [ours, kit] = targets;
        Ok((ours.figures(bytes), kit.figures(bytes)))
    })
    .await
    .map_err(|e| Error::Client(e.to_string()))??;
    drop(nbdkit);
    ours_task.abort();

    let ratios = Ratios {
        throughput: ours.nbdcopy_mib_s / nbdkit_figures.nbdcopy_mib_s,
        qd1_p50_latency: ours.qd1_p50_us / nbdkit_figures.qd1_p50_us,
        qd1_p99_latency: ours.qd1_p99_us / nbdkit_figures.qd1_p99_us,
        qd16_iops: ours.qd16_iops as f64 / nbdkit_figures.qd16_iops.max(1) as f64,
    };
    Ok(NbdBenchReport {
        image,
        ours,
        nbdkit: nbdkit_figures,
        ratios,
        nbdkit_version: nbdkit_version(),
    })
}
