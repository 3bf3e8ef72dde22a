//! A tenant's start and removal, and its status: the flows that add a tenant to the worker's
//! table and take it out again.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{error, info};

use crate::criu::log_tail;
use crate::error::{Error, Result};
use crate::host::{TenantSlot, Worker};
use crate::process::{kill_tree, process_alive};
use crate::readiness::probe_tenant;
use crate::tenant::{TenantDirs, TenantInfo, TenantSpec, TenantState, DEFAULT_IDLE_TIMEOUT_MS};

impl Worker {
    /// The tenant's record, with its state brought up to date (a process may have exited).
    pub async fn status(&self, name: &str) -> Result<TenantInfo> {
        let slot = self.slot(name)?;
        let mut rt = slot.runtime.lock().await;
        if rt.info.state == TenantState::Running && !rt.info.pid.is_some_and(process_alive) {
            rt.info.state = TenantState::Exited;
            rt.info.save(&slot.dirs)?;
        }
        let mut info = rt.info.clone();
        info.last_active = Some(slot.activity.last_ms());
        if info.state == TenantState::Running {
            info.rss_bytes = self.cgroup_memory(name).or(info.rss_bytes);
        }
        // Recorded at the swap-in; its background copy marks the end on disk only (it may not
        // take the runtime lock: a swap-out holding it waits for the copy).
        info.pages_pending =
            rt.info.pages_pending && !crate::recovery::restore_complete(&slot.dirs);
        info.last_fill = slot.last_fill();
        info.last_reads = slot.last_reads();
        Ok(info)
    }

    /// Starts a new tenant: pid 1 of its own PID namespace, in a network namespace of its own
    /// (loopback only), with its own working directory and log file; waits until it listens on
    /// its port inside, then serves its public port (see `serving`). With `deterministic`, ASLR
    /// is off and hash seeds are fixed, so that tenants running the same program share pages.
    pub async fn add(self: &Arc<Self>, spec: TenantSpec) -> Result<TenantInfo> {
        let TenantSpec {
            name,
            port,
            cmd,
            deterministic,
            idle_timeout_ms,
            env,
            workdir,
            sandbox,
            read_only,
            limits,
            proxy_protocol,
        } = spec;
        let name = name.as_str();
        if !pagestore::manifest::valid_tenant_name(name) {
            return Err(Error::InvalidTenantName(name.to_string()));
        }
        let Some((program, args)) = cmd.split_first() else {
            return Err(Error::NoCommand(name.to_string()));
        };
        limits.check().map_err(|reason| Error::BadLimits {
            tenant: name.to_string(),
            reason,
        })?;
        if let (true, Some(why)) = (limits != Default::default(), self.cgroups.unavailable()) {
            return Err(Error::BadLimits {
                tenant: name.to_string(),
                reason: format!(
                    "this worker runs its tenants without cgroups ({why}): its memory_limit and \
                     cpu_weight cannot be applied"
                ),
            });
        }
        self.tenants.check_free(name, port)?;
        // The public port is the worker's from now on: taken first, so that a port in use
        // fails the add before anything starts.
        let spare = crate::host::lock_std(&self.spare_listeners).remove(&port);
        let listener = spare
            .map(Ok)
            .unwrap_or_else(|| crate::serving::bind_public(self.config.listen_addr, port));
        let listener = listener.map_err(|e| Error::Start {
            name: name.to_string(),
            reason: format!("port {port} cannot be listened on: {e}"),
        })?;
        if let Some(dir) = &workdir {
            if !dir.is_absolute() || !dir.is_dir() {
                return Err(Error::Start {
                    name: name.to_string(),
                    reason: format!(
                        "its working directory {} must be an absolute path to a directory",
                        dir.display()
                    ),
                });
            }
        }
        if let Some(path) = read_only.iter().find(|p| !p.is_absolute() || !p.exists()) {
            return Err(Error::Start {
                name: name.to_string(),
                reason: format!(
                    "its read-only path {} must be an absolute path that exists",
                    path.display()
                ),
            });
        }
        let dirs = TenantDirs::new(&self.config.tenants_dir, name);
        let cwd = match &workdir {
            Some(dir) => dir.clone(),
            None => dirs.cwd(),
        };
        for dir in [&dirs.root, &cwd] {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let pin = dirs.netns();
        let _ = crate::netns::remove(&pin);
        let made = {
            let pin = pin.clone();
            tokio::task::spawn_blocking(move || crate::netns::create(&pin)).await
        };
        match made {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(Error::io(&pin, e)),
            Err(e) => {
                return Err(Error::TaskFailed {
                    task: "network namespace",
                    source: e,
                })
            }
        }
        let ns = crate::netns::open(&pin).map_err(|e| Error::io(&pin, e))?;
        let log_path = dirs.log();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| Error::io(&log_path, e))?;
        let log_err = log.try_clone().map_err(|e| Error::io(&log_path, e))?;
        let read_only = if sandbox {
            crate::sandbox::shown_read_only(&cmd, &read_only, &cwd, &dirs.root, &self.secrets)
                .map_err(|reason| Error::Start {
                    name: name.to_string(),
                    reason,
                })?
        } else {
            read_only
        };
        let confined = if sandbox {
            let view = dirs.view(&cwd, &read_only, &self.secrets);
            let entry = prepare_view(&dirs, &view).map_err(|e| Error::Start {
                name: name.to_string(),
                reason: format!("its sandbox cannot be set up: {e}"),
            })?;
            Some(crate::launch::Confined::new(entry))
        } else {
            None
        };
        let mut command = std::process::Command::new(program);
        command
            .args(args)
            .envs(&env)
            .current_dir(&cwd)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        crate::launch::as_tenant(&mut command, deterministic, Some(ns), confined);
        if let Err(e) = self.join_cgroup_at_exec(name, &limits, &mut command) {
            let _ = crate::netns::remove(&pin);
            return Err(e);
        }
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
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                let _ = crate::netns::remove(&pin);
                self.drop_cgroup(name).await;
                return Err(Error::Start {
                    name: name.to_string(),
                    reason: format!("{program}: {e}"),
                });
            }
        };
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

        let info = TenantInfo {
            name: name.to_string(),
            state: TenantState::Running,
            pid: Some(pid),
            port,
            cmd,
            deterministic,
            env,
            workdir,
            sandbox,
            read_only,
            checkpoint: None,
            generation: None,
            last_swap_out: None,
            last_swap_in: None,
            last_fill: None,
            last_reads: None,
            idle_timeout_ms: idle_timeout_ms.unwrap_or(DEFAULT_IDLE_TIMEOUT_MS),
            last_active: Some(pagestore::clock::now_ms()),
            rss_bytes: None,
            limits,
            proxy_protocol,
            restore_failures: 0,
            failure: None,
            staging: None,
            pages_pending: false,
        };
        let slot = Arc::new(TenantSlot::new(dirs.clone(), info.clone(), &self.secrets));
        if let Err(e) = self.wait_listening(&slot, pid, &log_path).await {
            kill_tree(pid).await;
            let _ = crate::netns::remove(&pin);
            self.drop_cgroup(name).await;
            return Err(e);
        }
        info.save(&dirs)?;
        info!(pid, port, "tenant started");
        let slot = self.tenants.insert_slot(name, slot);
        self.serve(&slot, listener);
        Ok(info)
    }

    /// Makes tenant `name`'s cgroup with `limits` and has `command` join it before it executes
    /// (see `cgroup`).
    fn join_cgroup_at_exec(
        &self,
        name: &str,
        limits: &crate::cgroup::Limits,
        command: &mut std::process::Command,
    ) -> Result<()> {
        let Some(cgroup) = self.prepare_cgroup(name, limits)? else {
            return Ok(());
        };
        let procs = cgroup.open_procs().map_err(|source| Error::Cgroup {
            tenant: name.to_string(),
            source,
        })?;
        crate::cgroup::join_before_exec(command, procs);
        Ok(())
    }

    /// Waits until the tenant of `slot` (process `pid`) listens on its port inside its
    /// namespace; fails if it exits first or takes longer than `start_timeout_ms`.
    async fn wait_listening(
        self: &Arc<Self>,
        slot: &Arc<TenantSlot>,
        pid: u32,
        log_path: &std::path::Path,
    ) -> Result<()> {
        let started = Instant::now();
        let timeout = Duration::from_millis(self.config.start_timeout_ms);
        loop {
            if probe_tenant(self, slot).await {
                return Ok(());
            }
            if !process_alive(pid) {
                return Err(Error::Start {
                    name: slot.name.clone(),
                    reason: format!("it exited; its log says:\n{}", log_tail(log_path, 10)),
                });
            }
            if started.elapsed() > timeout {
                return Err(Error::StartTimeout {
                    name: slot.name.clone(),
                    port: slot.port,
                    waited_ms: self.config.start_timeout_ms,
                    log: log_path.to_path_buf(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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
        self.drop_cgroup(name).await;
        // First the checkpoints: if the store is unreachable, `rm` fails and can be run again.
        let gone = self.store.forget(name).await?;
        info!(checkpoints = gone.len(), "checkpoints forgotten");
        slot.stop_serving();
        if let Err(e) = crate::netns::remove(&slot.dirs.netns()) {
            error!(error = %e, "could not remove the tenant's network namespace");
        }
        if let Err(e) = std::fs::remove_dir_all(&slot.dirs.root) {
            error!(error = %e, "could not remove the tenant's directory");
        }
        self.tenants.remove(name);
        info!("tenant removed");
        Ok(())
    }
}

/// Makes the directories of a tenant's sandbox (its `/tmp`, `/dev/shm` and the skeleton of its
/// view) and returns the view ready to be entered.
pub(crate) fn prepare_view(
    dirs: &TenantDirs,
    view: &crate::sandbox::View,
) -> std::io::Result<crate::sandbox::Entry> {
    use std::os::unix::fs::PermissionsExt;
    for dir in [dirs.view_tmp(), dirs.view_shm()] {
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777))?;
    }
    std::fs::create_dir_all(dirs.mask_dir())?;
    std::fs::write(dirs.mask_file(), b"")?;
    view.prepare()?;
    view.entry()
}
