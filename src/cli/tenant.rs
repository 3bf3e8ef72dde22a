//! `pico worker run` and `pico tenant ...`: the worker daemon and the CLI that talks to it.

use std::process::ExitCode;
use std::time::Instant;

use clap::Subcommand;
use worker::protocol::{Client, Request};
use worker::tenant::{
    ActiveSetSummary, SwapInReport, SwapOutReport, TenantInfo, TenantSpec, TenantState,
};
use worker::tenant_log::TenantLog;

use super::{print_json, Context};

#[derive(Debug, Subcommand)]
pub enum WorkerCommand {
    /// Runs the worker daemon in the foreground until SIGINT/SIGTERM.
    Run,
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Starts a tenant: `pico tenant add NAME --port PORT -- CMD ARGS...`.
    Add {
        name: String,
        /// The TCP port it serves on (on 127.0.0.1).
        #[arg(long)]
        port: u16,
        /// Launch with ASLR off and fixed hash seeds, so that tenants running the same program
        /// share pages in the store (a security trade-off: see docs/ARCHITECTURE.md).
        #[arg(long)]
        deterministic: bool,
        /// Swap it out after this long without a byte on its connections: "90s", "500ms",
        /// "5m", "0" for never (default 60s).
        #[arg(long, value_parser = parse_duration_ms)]
        idle_timeout: Option<u64>,
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Lists tenants.
    Ls,
    /// Shows one tenant.
    Status { name: String },
    /// Checkpoints a tenant into the store; its process is gone afterwards.
    SwapOut { name: String },
    /// Restores a swapped-out tenant (lazily through the pager; whole when small and held here).
    SwapIn {
        name: String,
        /// Do not install the learned ActiveSet eagerly (for comparison).
        #[arg(long)]
        no_activeset: bool,
    },
    /// Shows a tenant's ActiveSet: the pages its restores touch first.
    Activeset { name: String },
    /// Stops and forgets a tenant (its checkpoints stay in the store).
    Rm { name: String },
    /// Prints the end of a tenant's log (its stdout and stderr).
    Logs {
        name: String,
        /// How many lines, from the end (the worker's default: 200).
        #[arg(long)]
        tail: Option<usize>,
    },
}

pub async fn run_worker(ctx: &Context, cmd: WorkerCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        WorkerCommand::Run => {
            worker::run(ctx.config.worker.clone(), ctx.config.store.clone()).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn run(ctx: &Context, cmd: TenantCommand) -> anyhow::Result<ExitCode> {
    let client = Client::new(&ctx.config.worker.socket);
    let started = Instant::now();
    let (request, name) = match &cmd {
        TenantCommand::Add {
            name,
            port,
            deterministic,
            idle_timeout,
            cmd,
        } => (
            Request::Add(TenantSpec {
                name: name.clone(),
                port: *port,
                cmd: cmd.clone(),
                deterministic: *deterministic,
                idle_timeout_ms: *idle_timeout,
            }),
            name.clone(),
        ),
        TenantCommand::Ls => (Request::Ls, String::new()),
        TenantCommand::Status { name } => (Request::Status { name: name.clone() }, name.clone()),
        TenantCommand::SwapOut { name } => (Request::SwapOut { name: name.clone() }, name.clone()),
        TenantCommand::SwapIn { name, no_activeset } => (
            Request::SwapIn {
                name: name.clone(),
                no_activeset: *no_activeset,
                install: None,
            },
            name.clone(),
        ),
        TenantCommand::Activeset { name } => {
            (Request::ActiveSet { name: name.clone() }, name.clone())
        }
        TenantCommand::Rm { name } => (Request::Rm { name: name.clone() }, name.clone()),
        TenantCommand::Logs { name, tail } => (
            Request::Logs {
                name: name.clone(),
                tail: *tail,
            },
            name.clone(),
        ),
    };
    let result = client.call(&request).await?;
    if ctx.json {
        print_json(&result)?;
        return Ok(ExitCode::SUCCESS);
    }
    match cmd {
        TenantCommand::Add { .. } | TenantCommand::Status { .. } => {
            let t: TenantInfo = serde_json::from_value(result)?;
            print_tenants(&[t]);
        }
        TenantCommand::Ls => {
            let ts: Vec<TenantInfo> = serde_json::from_value(result)?;
            print_tenants(&ts);
        }
        TenantCommand::SwapOut { .. } => {
            let r: SwapOutReport = serde_json::from_value(result)?;
            println!(
                "{name} swapped out in {} ms (dump {} ms, ingest {} ms): checkpoint {} generation {}, \
                 {} pages ({} zero, {} new), {} bytes uploaded (locality pack: {} pages, {} bytes)",
                r.total_ms,
                r.dump_ms,
                r.ingest_ms,
                r.checkpoint,
                r.generation,
                r.pages_total,
                r.pages_zero,
                r.pages_new,
                r.bytes_uploaded,
                r.locality_pages,
                r.locality_bytes
            );
        }
        TenantCommand::SwapIn { .. } => {
            let r: SwapInReport = serde_json::from_value(result)?;
            let how = if r.whole {
                "restored whole (small, held on this worker)".to_string()
            } else if r.prefetched_pages > 0 {
                format!("{} ActiveSet pages prefetched", r.prefetched_pages)
            } else {
                format!("{} ActiveSet pages installed eagerly", r.eager_pages)
            };
            println!(
                "{name} swapped in in {} ms (mount {} ms, restore {} ms; {} ms at the client): pid {}, \
                 {how}; restore set: {} cold GETs, {} bytes{}",
                r.total_ms,
                r.mount_ms,
                r.restore_ms,
                started.elapsed().as_millis(),
                r.pid,
                r.prefetch.cold_gets,
                r.prefetch.cold_bytes,
                match &r.prefetch.locality {
                    Some(l) if l.used => format!(" ({} from the locality pack in {} GETs)", l.pages, l.gets),
                    Some(l) => format!(
                        " (locality pack not used: {})",
                        l.skipped.as_deref().unwrap_or("-")
                    ),
                    None => String::new(),
                }
            );
        }
        TenantCommand::Activeset { .. } => {
            let a: ActiveSetSummary = serde_json::from_value(result)?;
            print!(
                "{name}: {} pages ({} KiB) merged from {} restores",
                a.pages,
                a.bytes / 1024,
                a.restores
            );
            match a.last {
                Some(l) => println!(
                    "; last restore (generation {}): {} pages installed eagerly, {} faults, hit rate {:.1}%",
                    l.generation,
                    l.eager_pages,
                    l.faults,
                    l.hit_rate * 100.0
                ),
                None => println!(),
            }
        }
        TenantCommand::Rm { .. } => println!("{name} removed"),
        TenantCommand::Logs { .. } => {
            let log: TenantLog = serde_json::from_value(result)?;
            for line in log.lines {
                println!("{line}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_tenants(tenants: &[TenantInfo]) {
    println!(
        "{:<16} {:<12} {:>8} {:>6}  {:<32} CMD",
        "NAME", "STATE", "PID", "PORT", "CHECKPOINT"
    );
    for t in tenants {
        // A pid only while it means a live process.
        let pid = match t.state {
            TenantState::Running | TenantState::SwappingOut => t.pid,
            _ => None,
        };
        println!(
            "{:<16} {:<12} {:>8} {:>6}  {:<32} {}",
            t.name,
            t.state.to_string(),
            pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            t.port,
            t.checkpoint.as_deref().unwrap_or("-"),
            t.cmd.join(" ")
        );
        if let (TenantState::Failed, Some(why)) = (t.state, &t.failure) {
            println!(
                "{:<16} failed {} restores in a row (swap it in by hand to retry): {why}",
                "", t.restore_failures
            );
        }
    }
}

/// A duration given as "<n>ms", "<n>s", "<n>m", "<n>h" or a bare number of seconds, in ms.
fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s, 500ms or 5m"))?;
    let scale = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    Ok(n * scale)
}

#[cfg(test)]
mod tests {
    use super::parse_duration_ms;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("3s"), Ok(3_000));
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("2m"), Ok(120_000));
        assert_eq!(parse_duration_ms("0"), Ok(0));
        assert!(parse_duration_ms("3x").is_err());
        assert!(parse_duration_ms("s").is_err());
    }
}
