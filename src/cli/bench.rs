//! `pico bench ...`: whole-system benchmarks (the logic lives in the `bench` crate).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::{print_json, Context};

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
    },
}

pub async fn run(ctx: &Context, cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Dedup {
            tenants,
            generations,
            out,
            work,
        } => {
            let opts = bench::dedup::Options {
                tenants,
                generations,
                out: out.clone(),
                work,
                criu: ctx.config.worker.criu.clone(),
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
    }
    Ok(ExitCode::SUCCESS)
}
