//! `pico worker run` and `pico tenant ...`: the worker daemon and the CLI that talks to it
//! (`spec`: a tenant spec file; `via_hub`: the commands that go through the hub).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Subcommand;
use worker::cgroup::Limits;
use worker::protocol::{Client, Request};
use worker::tenant::{
    ActiveSetSummary, ClientAddress, SwapInReport, SwapOutReport, TenantInfo, TenantSpec,
    TenantState,
};
use worker::tenant_log::TenantLog;

use super::{print_json, Context};

mod spec;
mod via_hub;

use spec::{parse_duration_ms, parse_env, SpecFile};
pub(super) use via_hub::the_hub;
use via_hub::{add_through_hub, ls_through_hub, move_tenant};

#[derive(Debug, Subcommand)]
pub enum WorkerCommand {
    /// Runs the worker daemon in the foreground until SIGINT/SIGTERM.
    Run {
        /// In a cluster (`--hub URL` or `[worker.hub]`), the address clients reach this
        /// worker's tenants on, which the hub's DNS gives (over `[worker.hub] public_addr`;
        /// default `listen_addr`).
        #[arg(long)]
        advertise: Option<std::net::IpAddr>,
    },
    /// Moves every tenant off worker NAME, through the hub ([worker.hub], or [hub] on the
    /// hub's machine), and places nothing new on it until `undrain`: a running tenant is moved
    /// (checkpointed, restored elsewhere), a sleeping one re-placed asleep. Prints each tenant's
    /// outcome; fails naming the tenants that could not move, which stay (docs/multi-host.md).
    Drain {
        name: String,
        /// Start the drain and return; `pico hub ls workers` shows it, and `drain` again
        /// follows it.
        #[arg(long)]
        no_wait: bool,
    },
    /// Lets the hub place tenants on worker NAME again (a drain under way stops before its
    /// next tenant).
    Undrain { name: String },
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Starts a tenant: `pico tenant add NAME --port PORT -- CMD ARGS...`, or `pico tenant add
    /// [NAME] --spec FILE` with the same in a TOML file (docs/hosting.md#tenant-specs).
    Add {
        /// Its name (from the spec file when omitted there).
        name: Option<String>,
        /// A TOML tenant spec: name, port, cmd, env, workdir, idle_timeout, layout, sandbox,
        /// read_only, user_namespace, memory_limit, cpu_weight, disk_quota, proxy_protocol,
        /// client_address, checkpoint_every.
        #[arg(long, conflicts_with_all = ["port", "deterministic", "idle_timeout", "env", "workdir", "no_sandbox", "read_only", "user_namespace", "memory_limit", "cpu_weight", "disk_quota", "proxy_protocol", "client_address", "checkpoint_every", "cmd"])]
        spec: Option<PathBuf>,
        /// The TCP port it serves on (the worker's on the host, the tenant's inside its network
        /// namespace).
        #[arg(long, required_unless_present = "spec")]
        port: Option<u16>,
        /// Launch with ASLR off and fixed hash seeds, so that tenants running the same program
        /// share pages in the store (a security trade-off: see docs/hosting.md#tenant-specs).
        #[arg(long)]
        deterministic: bool,
        /// Swap it out after this long without a byte on its connections: "90s", "500ms",
        /// "5m", "0" for never (default 60s).
        #[arg(long, value_parser = parse_duration_ms)]
        idle_timeout: Option<u64>,
        /// An environment variable for its command, KEY=VALUE (repeatable).
        #[arg(long, value_parser = parse_env)]
        env: Vec<(String, String)>,
        /// Its working directory (absolute; default: a directory of its own under the worker's
        /// tenants directory).
        #[arg(long)]
        workdir: Option<PathBuf>,
        /// Run it outside a sandbox: in the worker's view of the machine, as root with every
        /// capability. By default a tenant sees the system directories, the paths its command
        /// names and --read-only paths read-only and its working directory writable, with few
        /// capabilities and a seccomp filter (docs/hosting.md#sandbox).
        #[arg(long)]
        no_sandbox: bool,
        /// A host path its sandbox shows read-only (absolute; repeatable), beyond the
        /// directories of the paths its command names.
        #[arg(long, conflicts_with = "no_sandbox")]
        read_only: Vec<PathBuf>,
        /// Run it as root of a user namespace of its own: uid 0 inside is an unprivileged range
        /// of host ids, and its working directory is given to them (docs/hosting.md#sandbox).
        #[arg(long, conflicts_with = "no_sandbox")]
        user_namespace: bool,
        /// Its memory limit in its cgroup: "256M", "1G" (1024-based) or bytes (default: none).
        #[arg(long, value_parser = worker::cgroup::parse_memory_size)]
        memory_limit: Option<u64>,
        /// Its CPU weight against other tenants, 1..10000 (default 100).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        cpu_weight: Option<u32>,
        /// What its working directory may hold: "100M", "2G" (1024-based, at least 8M) or
        /// bytes; writes past it fail (ENOSPC) for it alone (default: none; docs/hosting.md).
        #[arg(long, value_parser = worker::cgroup::parse_memory_size, conflicts_with = "workdir")]
        disk_quota: Option<u64>,
        /// Start each connection forwarded to it with a PROXY protocol v2 header naming the
        /// client's address (for nginx's `proxy_protocol`, HAProxy...; default off).
        #[arg(long)]
        proxy_protocol: bool,
        /// The address it sees its clients at: "link" (default: its link's, no client passes
        /// for a local one) or "loopback" (127.0.0.1, for programs that serve local clients
        /// only, as redis's protected mode; each gets a local client's trust, and large
        /// transfers cost more: docs/hosting.md#ports-and-network-namespaces).
        #[arg(long)]
        client_address: Option<ClientAddress>,
        /// Checkpoint it this often while it runs and is busy, leaving it running: "5m", "30s"
        /// (default: only when it sleeps). A worker that dies loses at most this much of its
        /// work; each checkpoint pauses it for its dump (docs/hub.md).
        #[arg(long, value_parser = parse_duration_ms)]
        checkpoint_every: Option<u64>,
        #[arg(last = true, required_unless_present = "spec")]
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
    /// Moves a tenant to another worker of the cluster, through the hub ([worker.hub], or
    /// [hub] on the hub's machine): checkpointed here, restored there (docs/hub.md).
    Move {
        name: String,
        /// The destination worker's name at the hub.
        #[arg(long)]
        to: String,
    },
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
        WorkerCommand::Run { advertise } => {
            let mut config = ctx.config.worker.clone();
            if let Some(ip) = advertise {
                let link = config.hub.as_mut().ok_or_else(|| {
                    anyhow::anyhow!("--advertise is for a worker of a cluster: give --hub URL too")
                })?;
                link.public_addr = Some(ip);
            }
            worker::run(config, ctx.config.store.clone()).await?;
        }
        WorkerCommand::Drain { name, no_wait } => {
            return super::drain::drain(ctx, &name, no_wait).await
        }
        WorkerCommand::Undrain { name } => return super::drain::undrain(ctx, &name).await,
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn run(ctx: &Context, cmd: TenantCommand) -> anyhow::Result<ExitCode> {
    let client = Client::new(&ctx.config.worker.socket);
    let started = Instant::now();
    let (request, name) = match &cmd {
        TenantCommand::Add {
            name,
            spec,
            port,
            deterministic,
            idle_timeout,
            env,
            workdir,
            no_sandbox,
            read_only,
            user_namespace,
            memory_limit,
            cpu_weight,
            disk_quota,
            proxy_protocol,
            client_address,
            checkpoint_every,
            cmd,
        } => {
            let spec = match spec {
                Some(file) => SpecFile::load(file)?.into_spec(name.as_deref())?,
                None => TenantSpec {
                    name: name
                        .clone()
                        .ok_or_else(|| anyhow::anyhow!("tenant add: a NAME is needed"))?,
                    port: port.ok_or_else(|| anyhow::anyhow!("tenant add: --port is needed"))?,
                    cmd: cmd.clone(),
                    deterministic: *deterministic,
                    idle_timeout_ms: *idle_timeout,
                    env: env.iter().cloned().collect(),
                    workdir: workdir.clone(),
                    sandbox: !*no_sandbox,
                    read_only: read_only.clone(),
                    user_namespace: *user_namespace,
                    limits: Limits {
                        memory_limit: *memory_limit,
                        cpu_weight: *cpu_weight,
                    },
                    disk_quota: *disk_quota,
                    proxy_protocol: *proxy_protocol,
                    client_address: client_address.unwrap_or_default(),
                    checkpoint_every_ms: *checkpoint_every,
                },
            };
            let name = spec.name.clone();
            if ctx.via_hub {
                return add_through_hub(ctx, &spec).await;
            }
            (Request::Add(spec), name)
        }
        TenantCommand::Move { name, to } => return move_tenant(ctx, name, to).await,
        TenantCommand::Ls if ctx.via_hub => return ls_through_hub(ctx).await,
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
                 {} pages ({} zero, {} new), {} bytes uploaded (locality pack: {} pages, {} of them written since the previous checkpoint, {} bytes)",
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
                r.locality_written_pages,
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
        // Asked of the hub, and printed, above.
        TenantCommand::Move { .. } => {}
        TenantCommand::Logs { .. } => {
            let log: TenantLog = serde_json::from_value(result)?;
            for line in log.lines {
                println!("{line}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn print_tenants(tenants: &[TenantInfo]) {
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
