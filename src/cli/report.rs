//! `pico report cost`: the storage bill from the live store, per tenant and in total.
//!
//! The report itself (pricing, JSON, text table, self-contained HTML) is
//! `pagestore::accounting::report` and `pagestore::accounting::html`; this command parses its
//! arguments, wires the store, the worker's usage log and the `[prices]` of `pico.toml` into it,
//! and prints: `--json` for scripts, `--html FILE` for people.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use pagestore::accounting::html;
use pagestore::accounting::report::{cost_report, text_table, utc_now};

use super::{print_json, Context};

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Storage and request costs per tenant and in total, at the `[prices]` of pico.toml.
    Cost {
        /// Also write a self-contained HTML report (inline SVG charts, no network) to FILE.
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
    },
}

pub async fn run(ctx: &Context, cmd: ReportCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ReportCommand::Cost { html } => {
            let store = super::store::open(ctx).await?;
            let mut acc = store.accounting().await?;
            let gets =
                pagestore::usage::gets_since(&ctx.config.worker.usage_log, acc.period_start_ms())?;
            acc.apply_gets(&gets);
            let report = cost_report(acc, &ctx.config.prices, utc_now());
            if let Some(path) = &html {
                std::fs::write(path, html::render(&report))
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            if ctx.json {
                print_json(&report)?;
            } else {
                print!("{}", text_table(&report));
                if let Some(path) = &html {
                    println!("HTML report written to {}", path.display());
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
