//! The worker daemon: owns this machine's tenants and answers the CLI on a unix socket.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pagestore::{PageStore, StoreConfig};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;
use tracing::{error, info, info_span, warn, Instrument};

use crate::config::WorkerConfig;
use crate::criu::{log_tail, Criu};
use crate::criu_swrk::CriuSpares;
use crate::error::{Error, Result};
use crate::protocol::{Request, Response};
use crate::process::{become_subreaper, kill_tree, process_alive};
use crate::readiness::probe_port;
use crate::tenant::{TenantDirs, TenantInfo, TenantState};
use crate::whole_staging::WholeStaging;

/// A tenant as the running worker holds it.
pub(crate) struct TenantSlot {
    pub dirs: TenantDirs,
    /// The port it answers on, held from its start until it is removed: a swapped-out tenant
    /// listens nowhere, but its restore binds the port again and would fail were it taken.
    pub port: u16,
    pub runtime: tokio::sync::Mutex<TenantRuntime>,
    /// What the last restore's background fill read, once it is done. Kept apart from `runtime`:
    /// a swap-out holds that lock while it waits for the fill.
    pub last_fill: std::sync::Mutex<Option<pagestore::prefetch::PrefetchReport>>,
    /// Which tier served the last lazy restore's reads, per phase, once its mount is gone.
    pub last_reads: std::sync::Mutex<Option<pager::reads::MountReadReport>>,
    /// The tenant's ActiveSet as this worker last learned or loaded it (the store keeps the
    /// durable copy; this saves a cold-tier round trip on every swap-in).
    pub activeset: std::sync::Mutex<Option<pager::activeset::ActiveSet>>,
}

pub(crate) struct TenantRuntime {
    pub info: TenantInfo,
    /// The tail of the last lazy restore: waits for CRIU's lazy-pages daemon to copy in every
    /// page, then unmounts the checkpoint.
    pub restoring: Option<JoinHandle<()>>,
    /// The manifest of the tenant's newest checkpoint, kept from its swap-out (it is immutable).
    pub manifest: Option<(pagestore::CheckpointId, Arc<pagestore::Manifest>)>,
}

pub struct Worker {
    pub(crate) config: WorkerConfig,
    pub(crate) store: Arc<PageStore>,
    pub(crate) criu: Criu,
    tenants: std::sync::Mutex<BTreeMap<String, Arc<TenantSlot>>>,
    pub(crate) whole_staging: WholeStaging,
    /// `None` with `warm_criu = false`.
    pub(crate) criu_spares: Option<CriuSpares>,
}

/// Runs the worker until SIGINT or SIGTERM. Tenants keep running when it stops; the next worker
/// on the same home finds them again.
pub async fn run(config: WorkerConfig, store_config: StoreConfig) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::NotRoot);
    }
    let mut criu = Criu::detect(&config.criu, config.criu_log_level).await?;
    if !config.criu_hw_breakpoints {
        criu = criu.without_hw_breakpoints();
    }
    if let Err(e) = crate::kdat::ensure(&config.criu, criu.version()).await {
        warn!(error = %e, "CRIU will probe the kernel on every run (~30-45 ms per restore)");
    }
    become_subreaper().map_err(|e| Error::io("prctl(PR_SET_CHILD_SUBREAPER)", e))?;
    for dir in [&config.tenants_dir, &config.staging_dir, &config.mounts_dir] {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let store = Arc::new(PageStore::open(&store_config).await?);
    let listener = bind_socket(&config.socket).await?;
    let worker = Arc::new(Worker::load(config, store, criu)?);
    if worker.config.whole_restore_below_mib > 0 {
        let warming = worker.clone();
        tokio::task::spawn_blocking(move || warming.whole_staging.warm());
    }
    info!(
        socket = %worker.config.socket.display(),
        criu = worker.criu.version(),
        tenants = worker.tenant_names().len(),
        "worker ready"
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::io("SIGTERM handler", e))?;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let worker = worker.clone();
                    tokio::spawn(async move { worker.serve_connection(stream).await });
                }
                Err(e) => warn!(error = %e, "accept failed"),
            },
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
    }
    // A tenant still being filled by a lazy restore needs this process (its pages come through
    // the FUSE mount): let those restores finish first, so the tenants keep running.
    for name in worker.tenant_names() {
        let Ok(slot) = worker.slot(&name) else {
            continue;
        };
        let restoring = slot.runtime.lock().await.restoring.take();
        if let Some(restoring) = restoring {
            info!(tenant = %name, "waiting for its restore to finish");
            if tokio::time::timeout(crate::swap::LAZY_COPY_LIMIT, restoring)
                .await
                .is_err()
            {
                warn!(tenant = %name, "lazy restore still copying pages; stopping anyway");
            }
        }
    }
    worker.whole_staging.unmount().await;
    info!("worker stopping; tenants keep their state");
    let _ = std::fs::remove_file(&worker.config.socket);
    Ok(())
}

async fn bind_socket(path: &Path) -> Result<UnixListener> {
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(Error::BadRequest(format!(
                "another worker is already listening on {}",
                path.display()
            )));
        }
        std::fs::remove_file(path).map_err(|e| Error::io(path, e))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| Error::io(path, e))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io(path, e))?;
    Ok(listener)
}

impl Worker {
    fn load(config: WorkerConfig, store: Arc<PageStore>, criu: Criu) -> Result<Worker> {
        let mut tenants = BTreeMap::new();
        let entries = std::fs::read_dir(&config.tenants_dir)
            .map_err(|e| Error::io(&config.tenants_dir, e))?;
        for entry in entries.flatten() {
            let dirs = TenantDirs { root: entry.path() };
            let Ok(mut info) = TenantInfo::load(&dirs.state_file()) else {
                continue;
            };
            if info.state == TenantState::Running && !info.pid.is_some_and(process_alive) {
                warn!(tenant = %info.name, "tenant was running but its process is gone");
                info.state = TenantState::Exited;
                info.save(&dirs)?;
            }
            tenants.insert(
                info.name.clone(),
                Arc::new(TenantSlot {
                    dirs,
                    port: info.port,
                    runtime: tokio::sync::Mutex::new(TenantRuntime {
                        info,
                        restoring: None,
                        manifest: None,
                    }),
                    last_fill: std::sync::Mutex::new(None),
                    last_reads: std::sync::Mutex::new(None),
                    activeset: std::sync::Mutex::new(None),
                }),
            );
        }
        Ok(Worker {
            criu_spares: config.warm_criu.then(|| CriuSpares::start(&criu)),
            whole_staging: WholeStaging::new(
                config.mounts_dir.join(".whole"),
                config.whole_restore_below_mib << 20,
            ),
            config,
            store,
            criu,
            tenants: std::sync::Mutex::new(tenants),
        })
    }

    fn tenant_names(&self) -> Vec<String> {
        self.lock_tenants().keys().cloned().collect()
    }

    fn lock_tenants(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<TenantSlot>>> {
        self.tenants.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn slot(&self, name: &str) -> Result<Arc<TenantSlot>> {
        self.lock_tenants()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::UnknownTenant(name.to_string()))
    }

    async fn serve_connection(self: Arc<Self>, stream: UnixStream) {
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let response = match serde_json::from_str::<Request>(&line) {
                Ok(request) => match self.dispatch(request).await {
                    Ok(result) => Response {
                        ok: true,
                        result: Some(result),
                        error: None,
                    },
                    Err(e) => Response {
                        ok: false,
                        result: None,
                        error: Some(e.to_string()),
                    },
                },
                Err(e) => Response {
                    ok: false,
                    result: None,
                    error: Some(format!("bad request: {e}")),
                },
            };
            let mut out =
                serde_json::to_vec(&response).unwrap_or_else(|_| b"{\"ok\":false}".to_vec());
            out.push(b'\n');
            if write.write_all(&out).await.is_err() {
                break;
            }
        }
    }

    async fn dispatch(&self, request: Request) -> Result<serde_json::Value> {
        match request {
            Request::Ping => Ok(serde_json::json!({"criu": self.criu.version()})),
            Request::Ls => {
                let mut out = Vec::new();
                for name in self.tenant_names() {
                    if let Ok(info) = self.status(&name).await {
                        out.push(info);
                    }
                }
                to_json(&out)
            }
            Request::Status { name } => to_json(&self.status(&name).await?),
            Request::Add {
                name,
                port,
                cmd,
                deterministic,
            } => {
                let span = info_span!("tenant", tenant = %name);
                to_json(
                    &self
                        .add(&name, port, cmd, deterministic)
                        .instrument(span)
                        .await?,
                )
            }
            Request::SwapOut { name } => {
                let span = info_span!("tenant", tenant = %name);
                to_json(&self.swap_out(&name).instrument(span).await?)
            }
            Request::SwapIn {
                name,
                no_activeset,
                install,
            } => {
                let span = info_span!("tenant", tenant = %name);
                to_json(
                    &self
                        .swap_in(&name, !no_activeset, install)
                        .instrument(span)
                        .await?,
                )
            }
            Request::ActiveSet { name } => to_json(&self.activeset_summary(&name).await?),
            Request::Evict { tier } => {
                if tier.as_deref() != Some("local") {
                    self.store.evict_hot();
                }
                if tier.as_deref() != Some("hot") {
                    self.store.evict_local()?;
                }
                Ok(serde_json::Value::Null)
            }
            Request::StoreStats => to_json(&self.store.stats().await?),
            Request::Counters => to_json(&self.store.live_counters()),
            Request::Rm { name } => {
                let span = info_span!("tenant", tenant = %name);
                self.rm(&name).instrument(span).await?;
                Ok(serde_json::Value::Null)
            }
        }
    }

    /// The tenant's record, with its state brought up to date (a process may have exited).
    pub async fn status(&self, name: &str) -> Result<TenantInfo> {
        let slot = self.slot(name)?;
        let mut rt = slot.runtime.lock().await;
        if rt.info.state == TenantState::Running && !rt.info.pid.is_some_and(process_alive) {
            rt.info.state = TenantState::Exited;
            rt.info.save(&slot.dirs)?;
        }
        let mut info = rt.info.clone();
        info.last_fill = slot
            .last_fill
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        info.last_reads = *slot.last_reads.lock().unwrap_or_else(|p| p.into_inner());
        Ok(info)
    }

    /// Starts a new tenant in its own session, working directory and log file, and waits until it
    /// listens on its port. With `deterministic`, ASLR is off and hash seeds are fixed, so that
    /// tenants running the same program share pages.
    pub async fn add(
        &self,
        name: &str,
        port: u16,
        cmd: Vec<String>,
        deterministic: bool,
    ) -> Result<TenantInfo> {
        if !pagestore::manifest::valid_tenant_name(name) {
            return Err(Error::BadRequest(format!(
                "tenant name {name:?} must be 1-63 letters, digits, '.', '_' or '-'"
            )));
        }
        let Some((program, args)) = cmd.split_first() else {
            return Err(Error::BadRequest("no command given for the tenant".into()));
        };
        {
            let tenants = self.lock_tenants();
            if tenants.contains_key(name) {
                return Err(Error::TenantExists(name.to_string()));
            }
            if let Some((holder, _)) = tenants.iter().find(|(_, slot)| slot.port == port) {
                return Err(Error::PortHeld {
                    port,
                    tenant: holder.clone(),
                });
            }
        }
        // Readiness is "something listens on the port": it must be nobody before we start.
        if probe_port(port).await {
            return Err(Error::Start {
                name: name.to_string(),
                reason: format!("port {port} is already in use by another process"),
            });
        }
        let dirs = TenantDirs::new(&self.config.tenants_dir, name);
        let cwd = dirs.cwd();
        std::fs::create_dir_all(&cwd).map_err(|e| Error::io(&cwd, e))?;
        let log_path = dirs.log();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| Error::io(&log_path, e))?;
        let log_err = log.try_clone().map_err(|e| Error::io(&log_path, e))?;
        let mut command = std::process::Command::new(program);
        command
            .args(args)
            .current_dir(&cwd)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        crate::launch::as_tenant(&mut command, deterministic);
        let mut command = tokio::process::Command::from(command);
        let runtime = tokio::runtime::Handle::current();
        // A thread of its own forks the tenant (see `launch`): off the async workers.
        let spawned = tokio::task::spawn_blocking(move || {
            crate::launch::spawn_in_own_pid_namespace(move || {
                let _in_runtime = runtime.enter();
                command.spawn()
            })
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(format!("spawning task failed: {e}"))));
        let mut child = spawned.map_err(|e| Error::Start {
            name: name.to_string(),
            reason: format!("{program}: {e}"),
        })?;
        let pid = child.id().ok_or_else(|| Error::Start {
            name: name.to_string(),
            reason: "exited at once".into(),
        })?;
        let tenant = name.to_string();
        // Reap the process when it ends (CRIU's dump ends it on swap-out).
        tokio::spawn(async move {
            let status = child.wait().await;
            info!(tenant, pid, ?status, "tenant process ended");
        });

        let started = Instant::now();
        let timeout = Duration::from_millis(self.config.start_timeout_ms);
        loop {
            if probe_port(port).await {
                break;
            }
            if !process_alive(pid) {
                return Err(Error::Start {
                    name: name.to_string(),
                    reason: format!("it exited; its log says:\n{}", log_tail(&log_path, 10)),
                });
            }
            if started.elapsed() > timeout {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                return Err(Error::StartTimeout {
                    name: name.to_string(),
                    port,
                    waited_ms: self.config.start_timeout_ms,
                    log: log_path,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let info = TenantInfo {
            name: name.to_string(),
            state: TenantState::Running,
            pid: Some(pid),
            port,
            cmd,
            deterministic,
            checkpoint: None,
            generation: None,
            last_swap_out: None,
            last_swap_in: None,
            last_fill: None,
            last_reads: None,
        };
        info.save(&dirs)?;
        info!(pid, port, "tenant started");
        self.lock_tenants().insert(
            name.to_string(),
            Arc::new(TenantSlot {
                dirs,
                port,
                runtime: tokio::sync::Mutex::new(TenantRuntime {
                    info: info.clone(),
                    restoring: None,
                    manifest: None,
                }),
                last_fill: std::sync::Mutex::new(None),
                last_reads: std::sync::Mutex::new(None),
                activeset: std::sync::Mutex::new(None),
            }),
        );
        Ok(info)
    }

    /// Stops a tenant (if running) and forgets it, with its checkpoints in the store (their pages
    /// go at the next `pico store gc`).
    pub async fn rm(&self, name: &str) -> Result<()> {
        let slot = self.slot(name)?;
        let mut rt = slot.runtime.lock().await;
        if let Some(restoring) = rt.restoring.take() {
            restoring.abort();
            // Its mount and lazy-pages daemon go when the task is dropped; wait for that.
            let _ = restoring.await;
        }
        if rt.info.state == TenantState::Running {
            if let Some(pid) = rt.info.pid {
                kill_tree(pid).await;
            }
        }
        // First the checkpoints: if the store is unreachable, `rm` fails and can be run again.
        let gone = self.store.forget(name).await?;
        info!(checkpoints = gone.len(), "checkpoints forgotten");
        if let Err(e) = std::fs::remove_dir_all(&slot.dirs.root) {
            error!(error = %e, "could not remove the tenant's directory");
        }
        self.lock_tenants().remove(name);
        info!("tenant removed");
        Ok(())
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<serde_json::Value> {
    serde_json::to_value(value).map_err(|e| Error::Protocol(e.to_string()))
}
