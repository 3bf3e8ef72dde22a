//! A tenant's start and removal, and its status: the flows that add a tenant to the worker's
//! table and take it out again.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use crate::criu::log_tail;
use crate::error::{Error, Result};
use crate::host::{TenantSlot, Worker};
use crate::process::{kill_tree, process_alive};
use crate::readiness::probe_tenant;
use crate::tenant::{TenantDirs, TenantInfo, TenantSpec, TenantState};

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
        info.kernel_forwarded = slot.kernel.admitted();
        info.link_failures = slot.kernel.link_failures();
        if info.state == TenantState::Running {
            info.rss_bytes = self.cgroup_memory(name).or(info.rss_bytes);
        }
        // Recorded at the swap-in; its background copy marks the end on disk only (it may not
        // take the runtime lock: a swap-out holding it waits for the copy).
        info.pages_pending =
            rt.info.pages_pending && !crate::recovery::restore_complete(&slot.dirs);
        info.last_fill = slot.last_fill();
        info.last_reads = slot.last_reads();
        info.last_fill_wait = slot.last_fill_wait();
        Ok(info)
    }

    /// Starts a new tenant: pid 1 of its own PID namespace, in a network namespace of its own
    /// (loopback only), in its sandbox and cgroup, with its own working directory and log file;
    /// waits until it listens on its port inside, then serves its public port (see `serving`).
    /// With `deterministic`, ASLR is off and hash seeds are fixed, so that tenants running the
    /// same program share pages.
    pub async fn add(self: &Arc<Self>, spec: TenantSpec) -> Result<TenantInfo> {
        self.check_spec(&spec)?;
        let name = spec.name.clone();
        let name = name.as_str();
        // In a cluster, a name and a port are one tenant's across all workers.
        if let Some(hub) = self.hub.get() {
            hub.claim(name, spec.port).await?;
        }
        // The public port is the worker's from now on: taken first, so that a port in use
        // fails the add before anything starts.
        let listener = self.take_public_port(name, spec.port)?;
        let dirs = TenantDirs::new(&self.config.tenants_dir, name);
        let cwd = spec.workdir.clone().unwrap_or_else(|| dirs.cwd());
        for dir in [&dirs.root, &cwd] {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        if let Some(bytes) = spec.disk_quota {
            crate::disk_quota::ensure_mounted(name, &dirs, &cwd, bytes).await?;
        }
        let read_only = if spec.sandbox {
            crate::sandbox::shown_read_only(
                &spec.cmd,
                &spec.read_only,
                &cwd,
                &dirs.root,
                &self.secrets,
            )
            .map_err(|reason| start_error(name, reason))?
        } else {
            spec.read_only.clone()
        };
        let ns = make_netns(&dirs).await?;
        let user_ids = if spec.user_namespace {
            let first = self.tenants.user_ids.take();
            Some(first.map_err(|e| start_error(name, e.to_string()))?)
        } else {
            None
        };
        let netns_pin = dirs.netns();
        let quota_cwd = spec.disk_quota.map(|_| cwd.clone());
        let undo = |pid: Option<u32>| async move {
            if let Some(pid) = pid {
                kill_tree(pid).await;
            }
            let _ = crate::netns::remove(&netns_pin);
            if let Some(cwd) = quota_cwd {
                let _ = crate::disk_quota::unmount(name, &cwd).await;
            }
            self.drop_cgroup(name).await;
            if let Some(first) = user_ids {
                self.tenants.user_ids.give_back(first);
            }
        };
        let spawned = self
            .spawn_tenant(&spec, &dirs, &cwd, &read_only, ns, user_ids)
            .await;
        let pid = match spawned {
            Ok(pid) => pid,
            Err(e) => {
                undo(None).await;
                return Err(e);
            }
        };
        let info = TenantInfo::started(spec, pid, read_only, user_ids);
        let slot = Arc::new(TenantSlot::new(dirs.clone(), info.clone(), &self.secrets));
        // New here: it has learned nothing, and nothing in the store under its name is its own.
        slot.activeset_none_stored
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if let Err(e) = self.wait_listening(&slot, pid, &dirs.log()).await {
            undo(Some(pid)).await;
            return Err(e);
        }
        info.save(&dirs)?;
        info!(pid, port = info.port, "tenant started");
        let slot = self.tenants.insert_slot(name, slot);
        self.make_link(&slot).await;
        self.serve(&slot, listener);
        Ok(info)
    }

    /// Refuses a spec that cannot start: a bad name, no command, bad limits (or limits without
    /// cgroups), a name or port in use, a working directory or read-only path that is not an
    /// absolute path that exists.
    fn check_spec(&self, spec: &TenantSpec) -> Result<()> {
        let name = spec.name.as_str();
        if !pagestore::manifest::valid_tenant_name(name) {
            return Err(Error::InvalidTenantName(name.to_string()));
        }
        if spec.cmd.is_empty() {
            return Err(Error::NoCommand(name.to_string()));
        }
        let bad_limits = |reason| Error::BadLimits {
            tenant: name.to_string(),
            reason,
        };
        spec.limits.check().map_err(bad_limits)?;
        if let (true, Some(why)) = (
            spec.limits != Default::default(),
            self.cgroups.unavailable(),
        ) {
            return Err(bad_limits(format!(
                "this worker runs its tenants without cgroups ({why}): its memory_limit and \
                 cpu_weight cannot be applied"
            )));
        }
        if let Some(bytes) = spec.disk_quota {
            if bytes < crate::disk_quota::MIN_QUOTA {
                return Err(bad_limits(format!(
                    "disk_quota {bytes} is under the smallest, {} (8M)",
                    crate::disk_quota::MIN_QUOTA
                )));
            }
            if spec.workdir.is_some() {
                return Err(bad_limits(
                    "a disk quota is for the tenant's own working directory, not a workdir it \
                     names"
                        .into(),
                ));
            }
        }
        if spec.user_namespace && !spec.sandbox {
            return Err(start_error(
                name,
                "a user namespace of its own needs the sandbox: the tenant's root must not see \
                 the worker's mounts"
                    .into(),
            ));
        }
        self.tenants.check_free(name, spec.port)?;
        if let Some(dir) = spec
            .workdir
            .as_ref()
            .filter(|d| !d.is_absolute() || !d.is_dir())
        {
            return Err(start_error(
                name,
                format!(
                    "its working directory {} must be an absolute path to a directory",
                    dir.display()
                ),
            ));
        }
        if let Some(path) = spec
            .read_only
            .iter()
            .find(|p| !p.is_absolute() || !p.exists())
        {
            return Err(start_error(
                name,
                format!(
                    "its read-only path {} must be an absolute path that exists",
                    path.display()
                ),
            ));
        }
        Ok(())
    }

    /// The listening socket of a new tenant's public port: one handed over for it (systemd's),
    /// else bound now.
    pub(crate) fn take_public_port(&self, name: &str, port: u16) -> Result<std::net::TcpListener> {
        let spare = crate::host::lock_std(&self.spare_listeners).remove(&port);
        spare
            .map(Ok)
            .unwrap_or_else(|| crate::serving::bind_public(self.config.listen_addr, port))
            .map_err(|e| start_error(name, format!("port {port} cannot be listened on: {e}")))
    }

    /// Forks and executes the tenant of `spec` in the network namespace `ns`, in its sandbox
    /// (showing `read_only`) and cgroup, as root of a user namespace mapping host ids from
    /// `user_ids` when given, its output appended to its log; returns its pid. The process is
    /// reaped when it ends (CRIU's dump ends it on swap-out).
    async fn spawn_tenant(
        &self,
        spec: &TenantSpec,
        dirs: &TenantDirs,
        cwd: &std::path::Path,
        read_only: &[std::path::PathBuf],
        ns: std::fs::File,
        user_ids: Option<u32>,
    ) -> Result<u32> {
        let name = spec.name.as_str();
        let log_path = dirs.log();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| Error::io(&log_path, e))?;
        let log_err = log.try_clone().map_err(|e| Error::io(&log_path, e))?;
        let confined = if spec.sandbox {
            let view = dirs.view(cwd, read_only, &self.secrets);
            let entry = prepare_view(dirs, &view)
                .map_err(|e| start_error(name, format!("its sandbox cannot be set up: {e}")))?;
            Some(crate::launch::Confined::new(entry))
        } else {
            None
        };
        if let Some(first) = user_ids {
            let launch = crate::launch::UserNamespaceLaunch {
                exec: tenant_exec(spec)?,
                first_id: first,
                deterministic: spec.deterministic,
                confined,
                netns: Some(ns),
            };
            return self
                .spawn_in_user_namespace(spec, cwd, &log_path, launch)
                .await;
        }
        let (program, args) = spec
            .cmd
            .split_first()
            .ok_or_else(|| Error::NoCommand(name.to_string()))?;
        let mut command = std::process::Command::new(program);
        command
            .args(args)
            .envs(&spec.env)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        crate::launch::as_tenant(&mut command, spec.deterministic, Some(ns), confined);
        self.join_cgroup_at_exec(name, &spec.limits, &mut command)?;
        let mut command = tokio::process::Command::from(command);
        let runtime = tokio::runtime::Handle::current();
        // A thread of its own forks the tenant (see `launch`): off the async workers.
        let mut child = tokio::task::spawn_blocking(move || {
            crate::launch::spawn_in_own_pid_namespace(move || {
                let _in_runtime = runtime.enter();
                command.spawn()
            })
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(format!("spawning task failed: {e}"))))
        .map_err(|e| start_error(name, format!("{program}: {e}")))?;
        let pid = child
            .id()
            .ok_or_else(|| start_error(name, "exited at once".into()))?;
        let tenant = name.to_string();
        tokio::spawn(async move {
            let status = child.wait().await;
            info!(tenant, pid, ?status, "tenant process ended");
        });
        Ok(pid)
    }

    /// Starts `launch`, the tenant of `spec`, as root of its user namespace (see `userns`): gives
    /// its working directory `cwd` and its log to the namespace's ids first, and puts it in its
    /// cgroup before it goes on.
    async fn spawn_in_user_namespace(
        &self,
        spec: &TenantSpec,
        cwd: &std::path::Path,
        log: &std::path::Path,
        launch: crate::launch::UserNamespaceLaunch,
    ) -> Result<u32> {
        let name = spec.name.as_str();
        let first = launch.first_id;
        crate::userns::give_tree(cwd, first)
            .and_then(|()| crate::userns::give_tree(log, first))
            .map_err(|e| {
                start_error(
                    name,
                    format!("its files cannot be given to its user namespace: {e}"),
                )
            })?;
        let cgroup = self.prepare_cgroup(name, &spec.limits)?;
        let pid = tokio::task::spawn_blocking(move || {
            crate::launch::spawn_in_own_user_namespace(&launch, |pid| {
                cgroup.as_ref().map_or(Ok(()), |c| c.add(pid))
            })
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(format!("spawning task failed: {e}"))))
        .map_err(|e| start_error(name, format!("{}: {e}", spec.cmd[0])))?;
        let tenant = name.to_string();
        tokio::spawn(async move {
            let status = crate::process::reap_when_gone(pid).await;
            info!(tenant, pid, ?status, "tenant process ended");
        });
        Ok(pid)
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
        self.stop_here(&slot, &mut rt).await;
        // First the checkpoints: if the store is unreachable, `rm` fails and can be run again.
        let gone = self.store.forget(name).await?;
        info!(checkpoints = gone.len(), "checkpoints forgotten");
        self.unregister(&slot, &rt).await;
        info!("tenant removed");
        Ok(())
    }

    /// Gives up a tenant that now runs on another worker (the hub moved it while this one was
    /// cut off): stops it here without a dump (its state is the other worker's now) and forgets
    /// it, leaving its checkpoints, which are the other worker's too.
    pub(crate) async fn release(&self, name: &str) -> Result<()> {
        let slot = self.slot(name)?;
        let mut rt = slot.runtime.lock().await;
        self.stop_here(&slot, &mut rt).await;
        self.unregister(&slot, &rt).await;
        self.done_with_peer(name);
        warn!(
            tenant = name,
            "tenant released: it runs on another worker now"
        );
        Ok(())
    }

    /// [`Worker::release`] of a sleeping tenant only (a move: its checkpoint is what the other
    /// worker restores); a tenant that runs, or is being swapped, is refused.
    pub(crate) async fn release_sleeping(&self, name: &str) -> Result<()> {
        let slot = self.slot(name)?;
        let mut rt = slot.runtime.lock().await;
        if rt.info.state != TenantState::SwappedOut {
            return Err(Error::NotSwappedOut {
                name: name.to_string(),
                state: rt.info.state.to_string(),
            });
        }
        self.stop_here(&slot, &mut rt).await;
        self.unregister(&slot, &rt).await;
        info!(tenant = name, "tenant released: it moves to another worker");
        Ok(())
    }

    /// Ends what runs of a tenant here: its restore under way, its processes, its cgroup.
    async fn stop_here(&self, slot: &TenantSlot, rt: &mut crate::host::TenantRuntime) {
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
        self.drop_cgroup(&slot.name).await;
    }

    /// Takes a stopped tenant out of this worker: its port, network namespace, filesystem (a
    /// disk quota's), directory, slot.
    async fn unregister(&self, slot: &TenantSlot, rt: &crate::host::TenantRuntime) {
        slot.stop_serving();
        self.forget_port(slot).await;
        if let Err(e) = crate::netns::remove(&slot.dirs.netns()) {
            error!(error = %e, "could not remove the tenant's network namespace");
        }
        if rt.info.disk_quota.is_some() {
            if let Err(e) = crate::disk_quota::unmount(&slot.name, &slot.dirs.cwd()).await {
                error!(error = %e, "could not unmount the tenant's working directory");
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&slot.dirs.root) {
            error!(error = %e, "could not remove the tenant's directory");
        }
        // Its kept image is this worker's alone (a tenant moved away wakes elsewhere).
        self.store.drop_whole_image(&slot.name).await;
        self.tenants.remove(&slot.name);
        if let Some(first) = rt.info.user_namespace {
            self.tenants.user_ids.give_back(first);
        }
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

/// The program, arguments and whole environment (the worker's, the spec's, the deterministic
/// layout's) of the tenant of `spec`, as C strings for a child that may not allocate.
fn tenant_exec(spec: &TenantSpec) -> Result<crate::launch::Exec> {
    use std::os::unix::ffi::OsStrExt;
    let name = spec.name.as_str();
    let c = |bytes: &[u8]| {
        std::ffi::CString::new(bytes)
            .map_err(|_| start_error(name, "its command or environment has a NUL byte".into()))
    };
    let args = spec
        .cmd
        .iter()
        .map(|a| c(a.as_bytes()))
        .collect::<Result<Vec<_>>>()?;
    let program = args
        .first()
        .cloned()
        .ok_or_else(|| Error::NoCommand(name.to_string()))?;
    let mut env: std::collections::BTreeMap<std::ffi::OsString, std::ffi::OsString> =
        std::env::vars_os().collect();
    env.extend(spec.env.iter().map(|(k, v)| (k.into(), v.into())));
    if spec.deterministic {
        env.extend(
            crate::launch::DETERMINISTIC_ENV
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into())),
        );
    }
    let env = env
        .iter()
        .map(|(k, v)| c(&[k.as_bytes(), b"=", v.as_bytes()].concat()))
        .collect::<Result<Vec<_>>>()?;
    Ok(crate::launch::Exec { program, args, env })
}

/// A tenant that could not start, and why.
fn start_error(name: &str, reason: String) -> Error {
    Error::Start {
        name: name.to_string(),
        reason,
    }
}

/// Makes the network namespace of the tenant of `dirs` (pinned there, replacing a stale one)
/// and returns it, open.
pub(crate) async fn make_netns(dirs: &TenantDirs) -> Result<std::fs::File> {
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
    crate::netns::open(&pin).map_err(|e| Error::io(&pin, e))
}
