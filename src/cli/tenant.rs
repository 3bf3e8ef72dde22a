//! `pico worker run` and `pico tenant ...`: the worker daemon and the CLI that talks to it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;
use worker::protocol::Transport;

use clap::Subcommand;
use worker::cgroup::Limits;
use worker::protocol::{Client, Request};
use worker::tenant::{
    ActiveSetSummary, SwapInReport, SwapOutReport, TenantInfo, TenantSpec, TenantState,
};
use worker::tenant_log::TenantLog;

use super::{print_json, Context};

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
        /// read_only, user_namespace, memory_limit, cpu_weight, disk_quota, proxy_protocol.
        #[arg(long, conflicts_with_all = ["port", "deterministic", "idle_timeout", "env", "workdir", "no_sandbox", "read_only", "user_namespace", "memory_limit", "cpu_weight", "disk_quota", "proxy_protocol", "checkpoint_every", "cmd"])]
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

/// Where the hub is and its token: this worker's `[worker.hub]` (or `--hub`), else `[hub]`.
pub(super) fn the_hub(ctx: &Context) -> anyhow::Result<TheHub> {
    let (addr, transport, token_file) = match &ctx.config.worker.hub {
        Some(link) => (
            link.addr,
            Transport::trusting(link.ca_file.as_deref())?,
            link.token_file.clone(),
        ),
        None => (
            ctx.config.hub.api_listen,
            ctx.config.hub.client_transport()?,
            ctx.config.hub.token_file.clone(),
        ),
    };
    let token = worker::protocol::ApiToken::cluster(token_file.as_deref())?;
    Ok(TheHub {
        addr,
        transport,
        token,
    })
}

/// The hub a command acts through: its API's address, how it is reached, its token.
pub(super) struct TheHub {
    addr: std::net::SocketAddr,
    transport: Transport,
    token: worker::protocol::ApiToken,
}

impl TheHub {
    pub(super) async fn get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        Ok(hub::api::get_at(self.addr, &self.transport, &self.token, path).await?)
    }

    pub(super) async fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        Ok(hub::api::post(self.addr, &self.transport, &self.token, path, body).await?)
    }
}

/// `pico --hub URL tenant add`: the hub places the tenant and has that worker start it.
async fn add_through_hub(ctx: &Context, spec: &TenantSpec) -> anyhow::Result<ExitCode> {
    let answer = the_hub(ctx)?
        .post("/v1/tenants", &serde_json::to_value(spec)?)
        .await?;
    if ctx.json {
        print_json(&answer)?;
    } else {
        print_tenants(&[serde_json::from_value(answer)?]);
    }
    Ok(ExitCode::SUCCESS)
}

/// `pico --hub URL tenant ls`: the tenants of the whole cluster, as the hub knows them.
async fn ls_through_hub(ctx: &Context) -> anyhow::Result<ExitCode> {
    let answer = hub::api::get(&ctx.config.hub, "/v1/tenants").await?;
    if ctx.json {
        print_json(&answer)?;
    } else {
        super::hub::print_tenants(&serde_json::from_value::<Vec<_>>(answer)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// `pico tenant move`: asks the hub this worker reports to (or, on the hub's machine, the hub).
async fn move_tenant(ctx: &Context, name: &str, to: &str) -> anyhow::Result<ExitCode> {
    let path = format!("/v1/tenants/{name}/move");
    let answer = the_hub(ctx)?
        .post(&path, &serde_json::json!({ "to": to }))
        .await?;
    if ctx.json {
        print_json(&answer)?;
        return Ok(ExitCode::SUCCESS);
    }
    let r: hub::moving::MoveReport = serde_json::from_value(answer)?;
    println!(
        "{name} moved from {} to {} in {} ms of downtime (CPU check {} ms before it; swap-out {} ms, \
         adopt {} ms, swap-in {} ms): restore set {} pages, {} held there, {} from the cold tier \
         ({} bytes)",
        r.from,
        r.to,
        r.downtime_ms,
        r.cpu_check_ms,
        r.swap_out_ms,
        r.adopt_ms,
        r.swap_in_ms,
        r.restore_pages,
        r.restore_pages_held,
        r.restore_cold_pages,
        r.restore_cold_bytes
    );
    match r.bytes {
        Some(b) => println!(
            "its {} bytes of pages: {} held there, {} from {} (peer), {} from the cold tier \
             ({} bytes read from it in all)",
            b.checkpoint, b.held, b.peer, r.from, b.cold, b.cold_read
        ),
        None => println!("its restore did not finish in time to count where its pages came from"),
    }
    Ok(ExitCode::SUCCESS)
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

/// `KEY=VALUE`.
fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

/// A tenant spec file (`pico tenant add --spec FILE`): what the flags say, in TOML. Unknown keys
/// are refused, so a key this version does not honour (a CPU quota, say) is an error, not a
/// silent default.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    name: Option<String>,
    port: u16,
    cmd: Vec<String>,
    #[serde(default)]
    env: std::collections::BTreeMap<String, String>,
    workdir: Option<PathBuf>,
    /// As `--idle-timeout`: "90s", "500ms", "5m", "0".
    idle_timeout: Option<String>,
    /// "default" or "deterministic" (as `--deterministic`).
    #[serde(default)]
    layout: Layout,
    /// `false` as `--no-sandbox`.
    #[serde(default = "yes")]
    sandbox: bool,
    /// As `--read-only`.
    #[serde(default)]
    read_only: Vec<PathBuf>,
    /// As `--user-namespace`.
    #[serde(default)]
    user_namespace: bool,
    /// As `--memory-limit`: "256M", "1G", or a number of bytes.
    memory_limit: Option<MemorySize>,
    /// As `--cpu-weight`: 1..10000.
    cpu_weight: Option<u32>,
    /// As `--disk-quota`: "100M", "2G", or a number of bytes.
    disk_quota: Option<MemorySize>,
    /// As `--proxy-protocol`.
    #[serde(default)]
    proxy_protocol: bool,
    /// As `--checkpoint-every`: "5m", "30s".
    checkpoint_every: Option<String>,
}

fn yes() -> bool {
    true
}

/// A memory size in a spec file: a string with a unit, or a number of bytes.
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
enum MemorySize {
    Text(String),
    Bytes(u64),
}

impl MemorySize {
    fn bytes(&self) -> Result<u64, String> {
        match self {
            MemorySize::Text(text) => worker::cgroup::parse_memory_size(text),
            MemorySize::Bytes(n) => Ok(*n),
        }
    }
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum Layout {
    #[default]
    Default,
    Deterministic,
}

impl SpecFile {
    fn load(path: &std::path::Path) -> anyhow::Result<SpecFile> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read tenant spec {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("tenant spec {}: {e}", path.display()))
    }

    /// The spec to send; `name` (from the command line) wins over the file's.
    fn into_spec(self, name: Option<&str>) -> anyhow::Result<TenantSpec> {
        let name = name.map(str::to_string).or(self.name).ok_or_else(|| {
            anyhow::anyhow!("tenant spec: no name (give one in the file or as NAME)")
        })?;
        if self.cmd.is_empty() {
            anyhow::bail!("tenant spec: cmd is empty");
        }
        let idle_timeout_ms = self
            .idle_timeout
            .as_deref()
            .map(parse_duration_ms)
            .transpose()
            .map_err(|e| anyhow::anyhow!("tenant spec: idle_timeout: {e}"))?;
        let checkpoint_every_ms = self
            .checkpoint_every
            .as_deref()
            .map(parse_duration_ms)
            .transpose()
            .map_err(|e| anyhow::anyhow!("tenant spec: checkpoint_every: {e}"))?;
        let limits = Limits {
            memory_limit: self
                .memory_limit
                .as_ref()
                .map(MemorySize::bytes)
                .transpose()
                .map_err(|e| anyhow::anyhow!("tenant spec: memory_limit: {e}"))?,
            cpu_weight: self.cpu_weight,
        };
        limits
            .check()
            .map_err(|e| anyhow::anyhow!("tenant spec: {e}"))?;
        let disk_quota = self
            .disk_quota
            .as_ref()
            .map(MemorySize::bytes)
            .transpose()
            .map_err(|e| anyhow::anyhow!("tenant spec: disk_quota: {e}"))?;
        Ok(TenantSpec {
            name,
            port: self.port,
            cmd: self.cmd,
            deterministic: matches!(self.layout, Layout::Deterministic),
            idle_timeout_ms,
            env: self.env,
            workdir: self.workdir,
            sandbox: self.sandbox,
            read_only: self.read_only,
            user_namespace: self.user_namespace,
            limits,
            disk_quota,
            proxy_protocol: self.proxy_protocol,
            checkpoint_every_ms,
        })
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
    use super::{parse_duration_ms, parse_env, SpecFile};

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("3s"), Ok(3_000));
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("2m"), Ok(120_000));
        assert_eq!(parse_duration_ms("0"), Ok(0));
        assert!(parse_duration_ms("3x").is_err());
        assert!(parse_duration_ms("s").is_err());
    }

    #[test]
    fn env_pairs() {
        assert_eq!(parse_env("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert_eq!(parse_env("A="), Ok(("A".into(), String::new())));
        assert!(parse_env("=x").is_err());
        assert!(parse_env("A").is_err());
    }

    #[test]
    fn a_spec_file_says_what_the_flags_say_and_refuses_what_it_does_not_know() {
        let text = r#"
            name = "web"
            port = 8080
            cmd = ["python3", "-m", "http.server", "8080"]
            env = { GREETING = "hi" }
            workdir = "/srv/web"
            idle_timeout = "90s"
            layout = "deterministic"
            memory_limit = "256M"
            cpu_weight = 50
            disk_quota = "100M"
            user_namespace = true
        "#;
        let file: SpecFile = toml::from_str(text).unwrap();
        let spec = file.into_spec(None).unwrap();
        assert_eq!(spec.name, "web");
        assert_eq!(spec.port, 8080);
        assert_eq!(spec.idle_timeout_ms, Some(90_000));
        assert!(spec.deterministic);
        assert_eq!(spec.limits.memory_limit, Some(256 << 20));
        assert_eq!(spec.limits.cpu_weight, Some(50));
        assert_eq!(spec.disk_quota, Some(100 << 20));
        assert!(spec.user_namespace);
        assert_eq!(spec.env["GREETING"], "hi");
        assert_eq!(
            spec.workdir.as_deref(),
            Some(std::path::Path::new("/srv/web"))
        );
        let named: SpecFile = toml::from_str(text).unwrap();
        assert_eq!(named.into_spec(Some("other")).unwrap().name, "other");

        let err = toml::from_str::<SpecFile>("port = 1\ncmd = [\"x\"]\ncpu_quota = \"1\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("cpu_quota"), "{err}");
        let bytes: SpecFile =
            toml::from_str("port = 1\ncmd = [\"x\"]\nmemory_limit = 268435456\n").unwrap();
        let spec = bytes.into_spec(Some("b")).unwrap();
        assert_eq!(spec.limits.memory_limit, Some(256 << 20));
        for (bad, says) in [
            ("memory_limit = \"1Q\"", "memory_limit"),
            ("memory_limit = 256", "256M"),
            ("cpu_weight = 0", "cpu_weight"),
            ("cpu_weight = 10001", "cpu_weight"),
        ] {
            let text = format!("port = 1\ncmd = [\"x\"]\n{bad}\n");
            let file: SpecFile = toml::from_str(&text).unwrap();
            let err = file.into_spec(Some("b")).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
        let err = toml::from_str::<SpecFile>("port = 1\ncmd = [\"x\"]\nlayout = \"random\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("random"), "{err}");
        let nameless: SpecFile = toml::from_str("port = 1\ncmd = [\"x\"]\n").unwrap();
        assert!(nameless.into_spec(None).is_err());
    }
}
