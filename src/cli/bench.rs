//! `pico bench ...`: whole-system benchmarks.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use bench::restore::{self, App, Mode, RestoreOptions};
use clap::Subcommand;

use super::{print_json, Context};

/// The network between a worker and its object store, as the latency proxy models it.
#[derive(Debug, clap::Args)]
pub struct LinkArgs {
    /// One-way delay of the link (latency proxy), ms.
    #[arg(long, default_value_t = 20)]
    delay_ms: u64,
    /// Bandwidth per connection of the link, MB/s.
    #[arg(long, default_value_t = 100)]
    mbps: u64,
}

impl LinkArgs {
    fn model(&self) -> bench::latency_proxy::LinkModel {
        bench::latency_proxy::LinkModel {
            delay: std::time::Duration::from_millis(self.delay_ms),
            bytes_per_sec: self.mbps * 1_000_000,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Stores a corpus of real CRIU checkpoints as raw files, tar|zstd, restic and our store;
    /// prints bytes stored and store/restore times, for all and per layout and kind.
    Dedup {
        /// Tenants of each kind (python, redis, nginx) in each layout (default, deterministic).
        #[arg(long, default_value_t = 10)]
        tenants: u32,
        /// Checkpoints per tenant, with traffic in between.
        #[arg(long, default_value_t = 3)]
        generations: u32,
        /// Output directory for dedup.json, dedup.svg and README.md.
        #[arg(long, default_value = "bench-results/dedup")]
        out: PathBuf,
        /// Scratch directory for the corpus and stores (kept); default: a temporary one, removed.
        #[arg(long)]
        work: Option<PathBuf>,
        /// Also measure the candidate encodings of cold pages (per-page and framed zstd at
        /// several levels, with and without dictionaries) on the corpus's distinct pages.
        #[arg(long)]
        codecs: bool,
    },
    /// Our NBD server against `nbdkit file` on the same image: nbdcopy throughput, 4 KiB random
    /// reads at queue depth 1 (p50/p99 latency) and 16 (IOPS).
    Nbd {
        /// Raw page file to serve (e.g. a CRIU pages-1.img); default: a synthetic image.
        #[arg(long)]
        image: Option<PathBuf>,
        /// Pad the image with zero pages to this size, in MiB.
        #[arg(long, default_value_t = 256)]
        size_mib: u64,
        /// Scratch directory (default: the system temp dir).
        #[arg(long)]
        workdir: Option<PathBuf>,
        /// 4 KiB reads at queue depth 1 per server.
        #[arg(long, default_value_t = 20_000)]
        qd1_requests: usize,
        /// Seconds at queue depth 16 per server.
        #[arg(long, default_value_t = 3.0)]
        qd16_secs: f64,
        /// nbdcopy runs per server (median reported).
        #[arg(long, default_value_t = 5)]
        copy_runs: usize,
    },
    /// What the worker's forwarding of a tenant's port costs: nginx as a worker's tenant against
    /// the same nginx on the host, small-request latency (kept-alive and new connections) and
    /// large-transfer throughput, in alternating rounds.
    Forward {
        /// Rounds, each measuring direct and forwarded once (medians over them).
        #[arg(long, default_value_t = 7)]
        rounds: usize,
        /// Timed small requests per round, side and kind.
        #[arg(long, default_value_t = 3000)]
        requests: usize,
        /// Untimed requests ahead of them, each time.
        #[arg(long, default_value_t = 200)]
        warmup: usize,
        /// Size of the small file, bytes.
        #[arg(long, default_value_t = 612)]
        small_bytes: u64,
        /// Size of the large file, MiB.
        #[arg(long, default_value_t = 256)]
        large_mib: u64,
        /// Large transfers per round and side, the sides taking turns (ratio: the median over
        /// all of them).
        #[arg(long, default_value_t = 5)]
        transfers: usize,
        /// Keep the work directory (worker home, logs) for inspection.
        #[arg(long)]
        keep_work: bool,
        /// Another `pico` build (e.g. the one before a change to the forwarding): its worker
        /// forwards to a third copy of the tenant, measured in the same rounds.
        #[arg(long)]
        compare_pico: Option<PathBuf>,
        /// A second worker (of this build, or of --compare-pico) told to take this kernel path
        /// (`kernel_forward_path`), measured in the same rounds.
        #[arg(long, value_parser = ["routed", "nat"])]
        compare_path: Option<String>,
        /// Output directory (results.json, forward.svg, throughput.svg, README.md).
        #[arg(long, default_value = "bench-results/forward")]
        out: PathBuf,
    },
    /// The hub's DNS: queries/s for known tenant names (dnsperf and our own closed-loop
    /// generator) against a real `pico hub run` with N names and no worker, then p99 latency
    /// from our generator paced at 80% of the best rate.
    Dns {
        /// Known tenant names in the hub's record.
        #[arg(long, default_value_t = 1000)]
        names: usize,
        /// Seconds of each load run (dnsperf, closed loop, paced).
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Our generator's clients (closed loop) and sockets (paced).
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Do not run dnsperf: our generator only (the paced rate then comes from its closed
        /// loop).
        #[arg(long)]
        no_dnsperf: bool,
        /// Keep the work directory (the hub's home, cold directory and log) for inspection.
        #[arg(long)]
        keep_work: bool,
        /// Output directory (results.json, README.md).
        #[arg(long, default_value = "bench/results/dns")]
        out: PathBuf,
    },
    /// Runs the latency proxy in the foreground: LISTEN forwards to UPSTREAM with a network's
    /// delay and per-connection bandwidth (this kernel has no netem).
    Proxy {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        #[arg(long)]
        upstream: std::net::SocketAddr,
        #[command(flatten)]
        link: LinkArgs,
    },
    /// Page store throughput: ingest against b3sum + lz4 over the same bytes, re-ingest of
    /// known pages, reads from each tier (memory, local, cold dir, Garage), cold GETs per GiB.
    Store {
        /// Apps checkpointed with CRIU as inputs: counter, redis, nginx, large-heap (or "none").
        #[arg(long, value_delimiter = ',', default_value = "redis,counter")]
        apps: Vec<String>,
        /// Size of the synthetic image, MiB (0: none).
        #[arg(long, default_value_t = 128)]
        synthetic_mib: u64,
        /// Heap of the large-heap app, MiB.
        #[arg(long, default_value_t = 256)]
        heap_mb: u32,
        /// Measured runs of every ingest and read (medians are reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        #[command(flatten)]
        link: LinkArgs,
        /// Keep the work directory (images, stores) for inspection.
        #[arg(long)]
        keep_work: bool,
        /// Output directory (results.json, store.svg, README.md).
        #[arg(long, default_value = "bench-results/store")]
        out: PathBuf,
    },
    /// Time from swap-in start to a tenant's first correct answer, per app and restore mode.
    Restore(RestoreArgs),
    /// The dense host as a whole: N mixed sandboxed tenants registered at a steady rate and
    /// swapped out on their own, host memory per idle tenant, then wake-ups at open-loop rates
    /// (burst and sustained): first-answer latency, CPU per wake/sleep cycle, store bytes.
    Density(DensityArgs),
}

/// `pico bench density`'s arguments.
#[derive(Debug, clap::Args)]
pub struct DensityArgs {
    /// Tenants, a third of each kind (counter, redis, nginx).
    #[arg(long, default_value_t = 1000)]
    pub tenants: usize,
    /// Tenants added per second.
    #[arg(long, default_value_t = 3.0)]
    pub register_rate: f64,
    /// Adds under way at most (later adds wait: the achieved rate is reported).
    #[arg(long, default_value_t = 8)]
    pub register_concurrency: usize,
    /// Every tenant's idle timeout, seconds (longer than a burst phase).
    #[arg(long, default_value_t = 20.0)]
    pub idle_timeout_s: f64,
    /// Wake-ups per second of the burst phases.
    #[arg(long, value_delimiter = ',', default_value = "5,20,50")]
    pub burst_rates: Vec<f64>,
    /// Seconds of each burst phase.
    #[arg(long, default_value_t = 15.0)]
    pub burst_s: f64,
    /// Wake-ups per second of the sustained phases.
    #[arg(long, value_delimiter = ',', default_value = "2,5,10")]
    pub sustained_rates: Vec<f64>,
    /// Seconds of each sustained phase.
    #[arg(long, default_value_t = 40.0)]
    pub sustained_s: f64,
    /// Keys (~450 B each) of every redis tenant.
    #[arg(long, default_value_t = 200)]
    pub redis_keys: usize,
    /// The tenants' ports: the free ones from this on (keep them under the ephemeral range).
    #[arg(long, default_value_t = 20000)]
    pub base_port: u16,
    /// Seed of the arrivals and of the tenants picked.
    #[arg(long, default_value_t = 16)]
    pub seed: u64,
    /// Most seconds to wait after a phase for every woken tenant to sleep again.
    #[arg(long, default_value_t = 600.0)]
    pub drain_limit_s: f64,
    /// Seconds the host sleeps, every tenant asleep and the store settled, before its idle
    /// memory is measured (longer than the worker's `[hot] ttl_ms` and 4 s).
    #[arg(long, default_value_t = 40.0)]
    pub idle_settle_s: f64,
    /// A file with more of the worker's `pico.toml` (e.g. `[worker]` keys).
    #[arg(long)]
    pub worker_config: Option<PathBuf>,
    /// Keep the work directory (worker home and logs) for inspection.
    #[arg(long)]
    pub keep_work: bool,
    /// Output directory (README.md, results.json).
    #[arg(long, default_value = "bench-results/density")]
    pub out: PathBuf,
    /// Run nothing: read this results.json of an earlier run, check the goals again and write
    /// it with its README into --out (after a change to the report's text).
    #[arg(long)]
    pub rewrite_from: Option<PathBuf>,
}

/// `pico bench restore`'s arguments.
#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// Measured runs per app and mode (after one warm-up); issue #17 asks for 50.
    #[arg(long, default_value_t = 50)]
    pub runs: usize,
    /// Apps: counter, redis, nginx, large-heap, node-map, py-dict.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "counter,redis,nginx,large-heap,node-map,py-dict"
    )]
    pub apps: Vec<String>,
    /// Modes: criu-eager, lazy-local, lazy-cold, lazy-cold-activeset,
    /// lazy-cold-activeset-prefetch, lazy-local-first, lazy-cold-first (the last two: a
    /// tenant's first wake-up, a fresh tenant per run).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "criu-eager,lazy-local,lazy-cold,lazy-cold-activeset,lazy-cold-activeset-prefetch,lazy-local-first,lazy-cold-first"
    )]
    pub modes: Vec<String>,
    /// Heap of the large-heap app, MiB.
    #[arg(long, default_value_t = 256)]
    pub heap_mb: u32,
    /// A file with the `[cold]` section the cold modes use. Without it, the benchmark starts
    /// a Garage (deploy/garage.sh) behind a latency proxy.
    #[arg(long)]
    pub cold_config: Option<PathBuf>,
    /// A file with more of the workers' `pico.toml` (e.g. `[worker]` keys), for comparing
    /// configurations.
    #[arg(long)]
    pub worker_config: Option<PathBuf>,
    #[command(flatten)]
    pub link: LinkArgs,
    /// Keep the work directory (worker homes and logs) for inspection.
    #[arg(long)]
    pub keep_work: bool,
    /// Read the restore set from the ordinary packs, not from locality packs (comparison).
    #[arg(long)]
    pub no_locality_pack: bool,
    /// Start the tenants (and criu-eager's app) with the deterministic layout: a tenant's first
    /// wake-up then borrows the ActiveSet an earlier tenant of its app learned.
    #[arg(long)]
    pub deterministic: bool,
    /// Milliseconds from the start of each checkpoint to its measured restore, in every
    /// mode (a swapped-out tenant is idle before it is woken).
    #[arg(long, default_value_t = 1000)]
    pub idle_ms: u64,
    /// After the idle time, also wait until the worker's background recompression and its
    /// caching of new pages in the local tier (both behind each swap-out) have ended before a
    /// measured swap-in, so that their cold reads and CPU are not counted in the swap-in's
    /// (criu-eager has none to wait for).
    #[arg(long)]
    pub settle: bool,
    /// Output directory (results.json, restore.svg, README.md).
    #[arg(long, default_value = "bench-results/restore")]
    pub out: PathBuf,
}

pub async fn run(ctx: &Context, cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Dedup {
            tenants,
            generations,
            out,
            work,
            codecs,
        } => {
            let opts = bench::dedup::Options {
                tenants,
                generations,
                out: out.clone(),
                work,
                criu: ctx.config.worker.criu.clone(),
                codecs,
            };
            // On Ctrl-C the run is dropped at its next await: live tenants are killed and a
            // temporary scratch directory removed (see bench::dedup::corpus).
            let report = tokio::select! {
                report = bench::dedup::run(&opts) => report?,
                _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted; no tenant left running"),
            };
            if ctx.json {
                print_json(&report)?;
            } else {
                print!("{}", bench::dedup::table(&report));
                print!("{}", bench::dedup::goals(&report));
                println!("written to {}", out.display());
            }
        }
        BenchCommand::Nbd {
            image,
            size_mib,
            workdir,
            qd1_requests,
            qd16_secs,
            copy_runs,
        } => {
            let opts = bench::nbd::NbdBenchOptions {
                image,
                size_mib,
                workdir,
                qd1_requests,
                qd16_secs,
                copy_runs,
            };
            let r = bench::nbd::run(&opts).await?;
            if ctx.json {
                print_json(&r)?;
            } else {
                print_nbd(&r);
            }
        }
        BenchCommand::Forward {
            rounds,
            requests,
            warmup,
            small_bytes,
            large_mib,
            transfers,
            keep_work,
            compare_pico,
            compare_path,
            out,
        } => {
            let work = tempdir_in(&ctx.home)?;
            let opts = bench::forward::Options {
                pico: std::env::current_exe()?,
                work: work.clone(),
                site: std::path::Path::new("/dev/shm")
                    .join(format!("pico-bench-forward-{}", std::process::id())),
                out: out.clone(),
                rounds,
                requests,
                warmup,
                small_bytes,
                large_bytes: large_mib << 20,
                transfers,
                compare_pico,
                compare_path,
            };
            let report = in_work_dir(&work, keep_work, bench::forward::run(&opts), || {
                let _ = std::fs::remove_dir_all(&opts.site);
            })
            .await?;
            if ctx.json {
                print_json(&report)?;
            } else {
                print!("{}", bench::forward::table(&report));
                print!("{}", bench::forward::goals(&report));
                println!("written to {}", out.display());
            }
        }
        BenchCommand::Dns {
            names,
            seconds,
            concurrency,
            no_dnsperf,
            keep_work,
            out,
        } => {
            anyhow::ensure!(
                seconds.is_finite() && seconds > 0.0,
                "--seconds must be above 0"
            );
            let work = tempdir_in(&ctx.home)?;
            let opts = bench::dns::Options {
                pico: std::env::current_exe()?,
                work: work.clone(),
                out: out.clone(),
                names,
                run: std::time::Duration::from_secs_f64(seconds),
                concurrency,
                dnsperf: !no_dnsperf,
            };
            let report = in_work_dir(&work, keep_work, bench::dns::run(&opts), || {}).await?;
            if ctx.json {
                print_json(&report)?;
            } else {
                print!("{}", bench::dns::report::table(&report));
                print!("{}", bench::dns::report::goals(&report));
                println!("written to {}", out.display());
            }
        }
        BenchCommand::Proxy {
            listen,
            upstream,
            link,
        } => {
            let proxy =
                bench::latency_proxy::LatencyProxy::start(listen, upstream, link.model()).await?;
            println!("{}", proxy.addr());
            tokio::signal::ctrl_c().await?;
        }
        BenchCommand::Store {
            apps,
            synthetic_mib,
            heap_mb,
            runs,
            link,
            keep_work,
            out,
        } => {
            let apps = apps
                .iter()
                .filter(|a| a.as_str() != "none")
                .map(|a| App::parse(a).with_context(|| format!("unknown app {a:?}")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let work = tempdir_in(&ctx.home)?;
            let opts = bench::store::Options {
                out: out.clone(),
                work: work.clone(),
                repo: repo_root()?,
                criu: ctx.config.worker.criu.clone(),
                apps,
                heap_mb,
                synthetic_mib,
                runs,
                link: link.model(),
            };
            let report = in_work_dir(&work, keep_work, bench::store::run(&opts), || {}).await?;
            if ctx.json {
                print_json(&report)?;
            } else {
                print!("{}", bench::store::table(&report));
                print!("{}", bench::store::goals(&report));
                println!("written to {}", out.display());
            }
        }
        BenchCommand::Restore(args) => bench_restore(ctx, args).await?,
        BenchCommand::Density(args) => bench_density(ctx, args).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `pico bench restore`: the apps and modes measured by `bench::restore`, the cold modes against
/// a Garage behind a latency proxy unless `--cold-config` names another store.
async fn bench_restore(ctx: &Context, args: RestoreArgs) -> anyhow::Result<()> {
    let RestoreArgs {
        runs,
        apps,
        modes,
        heap_mb,
        cold_config,
        worker_config,
        link,
        keep_work,
        no_locality_pack,
        deterministic,
        idle_ms,
        settle,
        out,
    } = args;
    let apps = apps
        .iter()
        .map(|a| App::parse(a).with_context(|| format!("unknown app {a:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let modes = modes
        .iter()
        .map(|m| Mode::parse(m).with_context(|| format!("unknown mode {m:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Collected before the run: the commit and tools that made it.
    let provenance = bench::provenance::Provenance::collect(&[
        ("criu", &["--version"]),
        ("garage", &["--version"]),
    ]);
    let work = tempdir_in(&ctx.home)?;
    // Cold modes: a real S3 server behind a proxy that adds a real network's latency.
    let mut _garage = None;
    let mut _proxy = None;
    let mut link_text = None;
    let wants_cold = modes.iter().any(|m| m.cold());
    let cold_toml = match cold_config {
        Some(p) => {
            Some(std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?)
        }
        None if wants_cold => {
            let garage = bench::garage::GarageServer::start(&repo_root()?, &work.join("garage"))?;
            let proxy = bench::latency_proxy::LatencyProxy::start(
                "127.0.0.1:0".parse()?,
                garage.s3,
                link.model(),
            )
            .await?;
            let toml = garage.cold_toml_via(proxy.addr());
            link_text = Some(format!(
                "Garage on loopback behind the latency proxy, {} ms each way, {} MB/s per \
                 connection",
                link.delay_ms, link.mbps
            ));
            _garage = Some(garage);
            _proxy = Some(proxy);
            Some(toml)
        }
        None => None,
    };
    let opts = RestoreOptions {
        pico: std::env::current_exe()?,
        repo: repo_root()?,
        apps,
        modes: modes.clone(),
        runs,
        heap_mb,
        cold_toml,
        worker_toml: worker_config
            .map(|p| {
                std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
            })
            .transpose()?,
        work: work.clone(),
        locality_pack: !no_locality_pack,
        deterministic,
        idle: std::time::Duration::from_millis(idle_ms),
        settle,
    };
    let result = restore::run(&opts).await;
    drop(_proxy);
    drop(_garage);
    if keep_work {
        eprintln!("work directory kept: {}", work.display());
    } else {
        let _ = std::fs::remove_dir_all(&work);
    }
    let results = result?;
    let names: Vec<&str> = modes.iter().map(|m| m.name()).collect();
    let info = restore::report::RunInfo {
        provenance: &provenance,
        runs,
        idle_ms,
        settle,
        link: link_text,
    };
    restore::report::write(&out, &results, &names, &info)?;
    if ctx.json {
        print_json(&results)?;
    } else {
        print!("{}", restore::report::table(&results, &names));
        print!("{}", restore::report::goals(&results, &names));
        println!("results in {}", out.display());
    }
    Ok(())
}

/// `pico bench density`: `bench::density` on a worker of its own in a scratch directory.
async fn bench_density(ctx: &Context, args: DensityArgs) -> anyhow::Result<()> {
    if let Some(results) = &args.rewrite_from {
        let report = bench::density::report::rewrite(results, &args.out)?;
        print!("{}", bench::density::report::goals(&report));
        println!("written to {}", args.out.display());
        return Ok(());
    }
    let secs = std::time::Duration::from_secs_f64;
    let work = tempdir_in(&ctx.home)?;
    let opts = bench::density::Options {
        pico: std::env::current_exe()?,
        repo: repo_root()?,
        work: work.clone(),
        out: args.out.clone(),
        tenants: args.tenants,
        register_rate: args.register_rate,
        register_concurrency: args.register_concurrency,
        idle_timeout: secs(args.idle_timeout_s),
        burst_rates: args.burst_rates,
        burst: secs(args.burst_s),
        sustained_rates: args.sustained_rates,
        sustained: secs(args.sustained_s),
        redis_keys: args.redis_keys,
        base_port: args.base_port,
        seed: args.seed,
        worker_toml: args
            .worker_config
            .map(|p| {
                std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
            })
            .transpose()?,
        drain_limit: secs(args.drain_limit_s),
        idle_settle: secs(args.idle_settle_s),
    };
    let report = in_work_dir(&work, args.keep_work, bench::density::run(&opts), || {}).await?;
    if ctx.json {
        print_json(&report)?;
    } else {
        print!("{}", bench::density::report::table(&report));
        print!("{}", bench::density::report::goals(&report));
        println!("written to {}", args.out.display());
    }
    Ok(())
}

/// Runs `bench` with `work` as its scratch directory: removed afterwards unless `keep`, and on
/// Ctrl-C (after `on_interrupt`), when the run is dropped at its next await.
async fn in_work_dir<T, E>(
    work: &std::path::Path,
    keep: bool,
    bench: impl std::future::Future<Output = Result<T, E>>,
    on_interrupt: impl FnOnce(),
) -> anyhow::Result<T>
where
    anyhow::Error: From<E>,
{
    let result = tokio::select! {
        r = bench => r,
        _ = tokio::signal::ctrl_c() => {
            on_interrupt();
            let _ = std::fs::remove_dir_all(work);
            anyhow::bail!("interrupted")
        }
    };
    if keep {
        eprintln!("work directory kept: {}", work.display());
    } else {
        let _ = std::fs::remove_dir_all(work);
    }
    Ok(result?)
}

fn print_nbd(r: &bench::nbd::NbdBenchReport) {
    println!(
        "image: {} — {} bytes, {} data pages, {} zero pages",
        r.image.source, r.image.bytes, r.image.data_pages, r.image.zero_pages
    );
    println!(
        "{:<8} {:>14} {:>12} {:>12} {:>12}",
        "server", "nbdcopy MiB/s", "QD1 p50 µs", "QD1 p99 µs", "QD16 IOPS"
    );
    for (name, f) in [("pico", &r.ours), ("nbdkit", &r.nbdkit)] {
        println!(
            "{:<8} {:>14.0} {:>12.1} {:>12.1} {:>12}",
            name, f.nbdcopy_mib_s, f.qd1_p50_us, f.qd1_p99_us, f.qd16_iops
        );
    }
    println!(
        "ratios (pico/nbdkit): throughput {:.2} (goal >= 1.0), QD1 p50 latency {:.2} \
             (goal <= 1.2), QD1 p99 latency {:.2}, QD16 IOPS {:.2}",
        r.ratios.throughput, r.ratios.qd1_p50_latency, r.ratios.qd1_p99_latency, r.ratios.qd16_iops
    );
    println!("reference: {}", r.nbdkit_version);
}

fn tempdir_in(home: &std::path::Path) -> anyhow::Result<PathBuf> {
    let dir = home.join(format!("bench-work-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// The repository (for deploy/apps): the current directory or an ancestor with deploy/apps.
fn repo_root() -> anyhow::Result<PathBuf> {
    let mut dir = std::env::current_dir()?;
    loop {
        if dir.join("deploy/apps/counter.py").exists() {
            return Ok(dir);
        }
        if !dir.pop() {
            anyhow::bail!(
                "run pico bench from the picocenter-rs repository (deploy/apps is needed)"
            );
        }
    }
}
