//! Command-line interface: argument parsing and one module per command group.

mod bench;
mod config;
mod drain;
mod hub;
mod pager;
mod progress;
mod report;
mod store;
mod tenant;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{home_dir, PicoConfig};

#[derive(Debug, Parser)]
#[command(
    name = "pico",
    version,
    about = "Host thousands of mostly-idle applications on one machine"
)]
pub struct Args {
    /// Directory holding pico.toml and the embedded stores.
    #[arg(long, global = true, env = "PICO_HOME")]
    pub home: Option<PathBuf>,
    /// The configuration file (default: HOME/pico.toml, embedded defaults if it is absent). A
    /// file named here must exist. A package installs it as /etc/pico/pico.toml.
    #[arg(long, global = true, env = "PICO_CONFIG")]
    pub config: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long, global = true)]
    pub json: bool,
    /// The hub, `http://ADDRESS:PORT` (or `https://`, trusting PICO_HUB_CA or `[worker.hub]
    /// ca_file`): what `pico hub ls` and `pico tenant move` ask, what
    /// `pico worker run` reports to (over `[hub] api_listen` and `[worker.hub] addr`), and
    /// through which `pico tenant add` (placed by the hub) and `tenant ls` go. Its token comes
    /// from PICO_TOKEN or the configuration, never from the command line.
    #[arg(long, global = true)]
    pub hub: Option<String>,
    /// More logging (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The page store: ingest, materialize, list, verify.
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// Front ends onto the store: FUSE image directories, NBD exports.
    #[command(subcommand)]
    Pager(pager::PagerCommand),
    /// The worker daemon that runs tenants; a worker of a cluster drained and undrained.
    #[command(subcommand)]
    Worker(tenant::WorkerCommand),
    /// The control plane of many workers: DNS names of tenants, workers' heartbeats.
    #[command(subcommand)]
    Hub(hub::HubCommand),
    /// Tenants on the local worker.
    #[command(subcommand)]
    Tenant(tenant::TenantCommand),
    /// Whole-system benchmarks with JSON output.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Reports from the live store: what storage costs, per tenant.
    #[command(subcommand)]
    Report(report::ReportCommand),
    /// The configuration: check a file, every bad key with its line.
    #[command(subcommand)]
    Config(config::ConfigCommand),
}

/// What every command gets: where home is, its configuration, output mode.
pub struct Context {
    pub home: PathBuf,
    pub config: PicoConfig,
    pub json: bool,
    /// `--hub` was given: `tenant add` and `tenant ls` go through the hub.
    pub via_hub: bool,
}

/// Daemons log their work at info; one-shot commands only warnings, so their output stays clean.
pub fn init_tracing(verbose: u8, daemon: bool) {
    let default = match verbose {
        0 if daemon => "warn,pagestore=info,pager=info,worker=info,hub=info",
        0 => "warn",
        1 => "info,pagestore=debug,pager=debug,worker=debug,hub=debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours for a terminal only: a log file (the worker's, as a service) stays greppable.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let home = home_dir(args.home);
    let command = match args.command {
        // Before loading it: the file checked may not load.
        Command::Config(c) => return config::run(&home, args.config.as_deref(), args.json, c),
        command => command,
    };
    let mut config = match &args.config {
        Some(file) => PicoConfig::load_file(&home, file)?,
        None => PicoConfig::load(&home)?,
    };
    if let Some(file) = &args.config {
        // Secrets live there (tokens' paths, S3 keys): no tenant may read it.
        let file = std::path::absolute(file).unwrap_or_else(|_| file.clone());
        config.worker.hidden_from_tenants.push(file);
    }
    if let Some(url) = &args.hub {
        let (addr, https) = hub_addr(url)?;
        let ca = match https {
            false => None,
            true => Some(config.hub_ca().ok_or_else(|| {
                anyhow::anyhow!(
                    "--hub {url}: an HTTPS hub needs the certificate to trust (its CA, or its \
                     self-signed certificate): PICO_HUB_CA=FILE, or [worker.hub] ca_file"
                )
            })?),
        };
        config.point_at_hub(addr, ca);
    }
    let ctx = Context {
        home,
        config,
        json: args.json,
        via_hub: args.hub.is_some(),
    };
    if matches!(command, Command::Worker(tenant::WorkerCommand::Run { .. })) {
        // Before the runtime's threads exist: it applies to every arena they would make.
        worker::daemon::prepare_process();
    } else if matches!(command, Command::Hub(hub::HubCommand::Run { .. })) {
        // Before the runtime's threads exist: it changes the environment.
        worker::sd_notify::take_from_env();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match command {
            Command::Store(c) => store::run(&ctx, c).await,
            Command::Pager(c) => pager::run(&ctx, c).await,
            Command::Worker(c) => tenant::run_worker(&ctx, c).await,
            Command::Tenant(c) => tenant::run(&ctx, c).await,
            Command::Hub(c) => hub::run(&ctx, c).await,
            Command::Bench(c) => bench::run(&ctx, c).await,
            Command::Report(c) => report::run(&ctx, c).await,
            Command::Config(_) => unreachable!("pico config runs before the configuration loads"),
        }
    })
}

/// The hub's API address from `--hub` (`http://ADDRESS:PORT`, `https://ADDRESS:PORT` or
/// `ADDRESS:PORT`), and whether it is HTTPS.
fn hub_addr(url: &str) -> anyhow::Result<(std::net::SocketAddr, bool)> {
    let (bare, https) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
        (Some(bare), _) => (bare, true),
        (None, Some(bare)) => (bare, false),
        (None, None) => (url, false),
    };
    let addr = bare.trim_end_matches('/').parse().map_err(|_| {
        anyhow::anyhow!(
            "--hub {url:?}: give the hub's API as http://ADDRESS:PORT or https://ADDRESS:PORT \
             (an IP address: workers and the CLI check the hub's certificate against it)"
        )
    })?;
    Ok((addr, https))
}

/// Prints a value as one line of JSON.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

impl Args {
    /// Whether the command runs until stopped (and so logs what it does).
    pub fn is_daemon(&self) -> bool {
        matches!(
            self.command,
            Command::Worker(tenant::WorkerCommand::Run { .. })
                | Command::Hub(hub::HubCommand::Run { .. })
                | Command::Pager(pager::PagerCommand::Mount { .. })
        )
    }
}

#[cfg(test)]
mod tests {
    use super::hub_addr;

    #[test]
    fn the_hub_is_an_address_with_or_without_its_scheme() {
        let addr: std::net::SocketAddr = "10.0.0.1:7071".parse().unwrap();
        assert_eq!(hub_addr("http://10.0.0.1:7071").unwrap(), (addr, false));
        assert_eq!(hub_addr("http://10.0.0.1:7071/").unwrap(), (addr, false));
        assert_eq!(hub_addr("10.0.0.1:7071").unwrap(), (addr, false));
        assert_eq!(hub_addr("https://10.0.0.1:7071").unwrap(), (addr, true));
        assert!(hub_addr("https://hub.example:7071").is_err());
    }
}
