//! `pico hub run` and `pico hub ls`: the hub daemon and what it knows of the cluster.

use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use hub::registry::{TenantView, WorkerView};

use super::{print_json, Context};

#[derive(Debug, Subcommand)]
pub enum HubCommand {
    /// Runs the hub in the foreground until SIGINT/SIGTERM: DNS for the zone, the API workers
    /// report to (`[hub]` of pico.toml), its state in the cold tier (`[cold]`). Its token:
    /// PICO_TOKEN or `[hub] token_file`.
    Run {
        /// Its API (workers' heartbeats, `pico hub ls`), over `[hub] api_listen`.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Where it answers DNS, over `[hub] dns_listen`.
        #[arg(long)]
        dns: Option<std::net::SocketAddr>,
        /// The zone whose names are tenants, over `[hub] zone`.
        #[arg(long)]
        zone: Option<String>,
    },
    /// What the hub knows: its workers, or its tenants with where each is placed and why.
    Ls {
        #[arg(value_enum)]
        what: HubList,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum HubList {
    Workers,
    Tenants,
}

pub async fn run(ctx: &Context, cmd: HubCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        HubCommand::Run { listen, dns, zone } => {
            let mut config = ctx.config.hub.clone();
            config.api_listen = listen.unwrap_or(config.api_listen);
            config.dns_listen = dns.unwrap_or(config.dns_listen);
            config.zone = zone.unwrap_or(config.zone);
            hub::daemon::run(config, &ctx.config.store.cold).await?;
        }
        HubCommand::Ls { what } => ls(ctx, what).await?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn ls(ctx: &Context, what: HubList) -> anyhow::Result<()> {
    let path = match what {
        HubList::Workers => "/v1/workers",
        HubList::Tenants => "/v1/tenants",
    };
    let answer = hub::api::get(&ctx.config.hub, path).await?;
    if ctx.json {
        return print_json(&answer);
    }
    match what {
        HubList::Workers => print_workers(&serde_json::from_value::<Vec<WorkerView>>(answer)?),
        HubList::Tenants => print_tenants(&serde_json::from_value::<Vec<TenantView>>(answer)?),
    }
    Ok(())
}

fn print_workers(workers: &[WorkerView]) {
    println!(
        "{:<16} {:<6} {:<8} {:<22} {:<16} {:>8} {:>10} {:>6} {:>8}",
        "WORKER", "ALIVE", "DRAINING", "API", "PUBLIC", "TENANTS", "FREE MiB", "LOAD", "SEEN ms"
    );
    for w in workers {
        println!(
            "{:<16} {:<6} {:<8} {:<22} {:<16} {:>8} {:>10} {:>6.2} {:>8}",
            w.name,
            if w.alive { "yes" } else { "dead" },
            if w.draining { "yes" } else { "-" },
            w.api.to_string(),
            w.public_addr.to_string(),
            w.tenants,
            w.memory_available_bytes >> 20,
            w.load,
            w.last_seen_ms
        );
    }
}

pub(super) fn print_tenants(tenants: &[TenantView]) {
    println!(
        "{:<16} {:<16} {:<22} {:<13} {:>4}  PLACED BECAUSE",
        "TENANT", "WORKER", "ADDRESS", "STATE", "GEN"
    );
    for t in tenants {
        let worker = if t.worker_alive {
            t.worker.clone()
        } else {
            format!("{} (dead)", t.worker)
        };
        println!(
            "{:<16} {:<16} {:<22} {:<13} {:>4}  {}",
            t.name,
            worker,
            format!("{}:{}", t.address, t.port),
            t.state.map_or("-".to_string(), |s| s.to_string()),
            t.generation.map_or("-".to_string(), |g| g.to_string()),
            t.placed_because
        );
    }
}
