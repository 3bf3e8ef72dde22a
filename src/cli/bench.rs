//! `pico bench <suite>`: whole-system benchmarks, one variant per suite (the code is in `bench`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::{print_json, Context};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
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
}

pub async fn run(ctx: &Context, cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
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
                    r.ratios.throughput,
                    r.ratios.qd1_p50_latency,
                    r.ratios.qd1_p99_latency,
                    r.ratios.qd16_iops
                );
                println!("reference: {}", r.nbdkit_version);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
