//! `pico bench ...`: whole-system benchmarks.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use bench::restore::{self, App, Mode, RestoreOptions};
use clap::Subcommand;

use super::{print_json, Context};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Time from swap-in start to a tenant's first correct answer, per app and restore mode.
    Restore {
        /// Measured runs per app and mode (after one warm-up).
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// Apps: counter, redis, nginx, large-heap.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "counter,redis,nginx,large-heap"
        )]
        apps: Vec<String>,
        /// Modes: criu-eager, lazy-local, lazy-cold, lazy-cold-activeset.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "criu-eager,lazy-local,lazy-cold,lazy-cold-activeset"
        )]
        modes: Vec<String>,
        /// Heap of the large-heap app, MiB.
        #[arg(long, default_value_t = 256)]
        heap_mb: u32,
        /// A file with the `[cold]` section the cold modes use.
        #[arg(long)]
        cold_config: Option<PathBuf>,
        /// Output directory (results.json, restore.svg, README.md).
        #[arg(long, default_value = "bench-out/restore")]
        out: PathBuf,
    },
}

pub async fn run(ctx: &Context, cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Restore {
            runs,
            apps,
            modes,
            heap_mb,
            cold_config,
            out,
        } => {
            let apps = apps
                .iter()
                .map(|a| App::parse(a).with_context(|| format!("unknown app {a:?}")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let modes = modes
                .iter()
                .map(|m| Mode::parse(m).with_context(|| format!("unknown mode {m:?}")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let cold_toml = cold_config
                .map(|p| {
                    std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
                })
                .transpose()?;
            let command: Vec<String> = std::env::args().collect();
            bench::outdir::prepare(&out, "restore", &command.join(" "))?;
            let work = tempdir_in(&ctx.home)?;
            let opts = RestoreOptions {
                pico: std::env::current_exe()?,
                repo: repo_root()?,
                apps,
                modes: modes.clone(),
                runs,
                heap_mb,
                cold_toml,
                work: work.clone(),
            };
            let result = restore::run(&opts).await;
            let _ = std::fs::remove_dir_all(&work);
            let results = result?;
            std::fs::write(
                out.join("results.json"),
                serde_json::to_vec_pretty(&results)?,
            )?;
            let names: Vec<&str> = modes.iter().map(|m| m.name()).collect();
            let groups: Vec<bench::chart::Group> = results
                .apps
                .iter()
                .map(|(app, per)| bench::chart::Group {
                    label: app.clone(),
                    bars: names
                        .iter()
                        .map(|m| {
                            per.get(*m)
                                .map_or((0.0, None), |r| (r.p50_ms, Some(r.p95_ms)))
                        })
                        .collect(),
                })
                .collect();
            let svg = bench::chart::grouped_bars(
                "Time to first correct answer after swap-in (p50 bar, p95 whisker)",
                "ms",
                &names,
                &groups,
                Some((250.0, "250 ms (Picocenter, from S3)")),
            );
            std::fs::write(out.join("restore.svg"), svg)?;
            if ctx.json {
                print_json(&results)?;
            } else {
                println!(
                    "{:<12} {:<22} {:>5} {:>9} {:>9} {:>12} {:>9}",
                    "APP", "MODE", "RUNS", "p50 ms", "p95 ms", "COLD BYTES", "HIT RATE"
                );
                for (app, per) in &results.apps {
                    for m in &names {
                        if let Some(r) = per.get(*m) {
                            println!(
                                "{:<12} {:<22} {:>5} {:>9.1} {:>9.1} {:>12} {:>9}",
                                app,
                                m,
                                r.runs,
                                r.p50_ms,
                                r.p95_ms,
                                r.cold_bytes,
                                r.activeset_hit_rate
                                    .map(|h| format!("{:.0}%", h * 100.0))
                                    .unwrap_or_else(|| "-".into())
                            );
                        }
                    }
                }
                println!("results in {}", out.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
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
