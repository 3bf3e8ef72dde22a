//! `pico worker run`: checks that this machine can host tenants (root, CRIU), opens the store
//! and the tenant table, settles what a predecessor left half done (`recovery`), serves every
//! tenant's public port and the API (unix socket, and TCP with `api_listen`), watches idleness
//! and memory (`supervisor`) until SIGINT or SIGTERM, and then swaps its running tenants out or
//! leaves them running (`on_stop`). On SIGUSR2 it re-executes itself, handing its tenants and
//! their open ports to the new image (`handover`). Under systemd (`Type=notify`) it says when it
//! serves, reloads and stops, and pings the watchdog (`sd_notify`).

use std::sync::Arc;

use pagestore::{PageStore, StoreConfig};
use tracing::{error, info, warn};

use crate::config::{OnStop, WorkerConfig};
use crate::criu::Criu;
use crate::error::{Error, Result};
use crate::host::{finish_restoring, Worker};
use crate::process::become_subreaper;
use crate::supervisor::Reason;
use crate::tenant::TenantState;

/// The worker's rules for its configuration that serde cannot check, applied first at start
/// (and by `pico config check`): `api_listen` needs a token (`api_token_file`, readable and not
/// empty, or `PICO_TOKEN`), and `[worker.hub]` needs that TCP API, a public address, the hub's
/// token and, for HTTPS, a CA that loads. The API's token when it has one.
pub fn preflight(config: &WorkerConfig) -> Result<Option<crate::protocol::ApiToken>> {
    let token = crate::api::api_token(config)?;
    if let Some(hub) = &config.hub {
        crate::hub_link::check(hub, config.api_listen, config.listen_addr)?;
    }
    Ok(token)
}

/// Runs the worker until SIGINT or SIGTERM. Its running tenants are then swapped out, or with
/// `on_stop = "leave-running"` keep running for the next worker on the same home to adopt.
pub async fn run(config: WorkerConfig, store_config: StoreConfig) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::NotRoot);
    }
    // From the start: recovery and a full host's swap-out at stop can take minutes.
    let watchdog = crate::sd_notify::spawn_watchdog();
    let api_token = preflight(&config)?;
    // One worker per home: the recovery below must not run beside a live worker.
    let _only_worker = only_worker(&config.socket)?;
    let mut criu = Criu::detect(&config.criu, config.criu_log_level).await?;
    if !config.criu_hw_breakpoints {
        criu = criu.without_hw_breakpoints();
    }
    if let Some(name) = config.hub.as_ref().and_then(|h| h.name.as_deref()) {
        criu = criu.on_worker(name);
    }
    if let Err(e) = crate::kdat::ensure(&config.criu, criu.version()).await {
        warn!(error = %e, "CRIU will probe the kernel on every run (~30-45 ms per restore)");
    }
    become_subreaper().map_err(|e| Error::io("prctl(PR_SET_CHILD_SUBREAPER)", e))?;
    raise_open_file_limit();
    for dir in [&config.tenants_dir, &config.staging_dir, &config.mounts_dir] {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    // Root's alone: the images mounted or written below are readable by everyone who reaches
    // them (a tenant in a user namespace opens some of its own; CRIU hands it the directory).
    {
        use std::os::unix::fs::PermissionsExt;
        let mounts = &config.mounts_dir;
        std::fs::set_permissions(mounts, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io(mounts, e))?;
    }
    let store = Arc::new(PageStore::open(&store_config).await?);
    let kernel_forward = crate::kernel_forward::KernelForward::start(&config).await;
    let worker = Arc::new(Worker::open(config, store, criu, kernel_forward)?);
    worker.forget_admissions().await;
    worker.recover().await?;
    serve_public_ports(&worker);
    // The API last: once its socket answers, every tenant's port is served.
    let listeners = crate::api::Listeners::bind(&worker.config, api_token).await?;
    let supervisor = crate::supervisor::start(worker.clone());
    let hub_link = crate::hub_link::start(&worker, listeners.tcp_addr())?;
    let scheduled_gc = crate::scheduled_gc::start(worker.clone());
    if worker.config.whole_restore_below_mib > 0 {
        let warming = worker.clone();
        tokio::task::spawn_blocking(move || warming.whole_staging.warm());
    }
    info!(
        socket = %worker.config.socket.display(),
        api_tcp = ?listeners.tcp_addr(),
        criu = worker.criu.version(),
        tenants = worker.tenant_names().len(),
        "worker ready"
    );
    // Handled before the worker says it is ready: a reload (SIGUSR2) or stop sent right after
    // READY=1 otherwise met the signals' default action and killed the worker (seen once in
    // the package test: exit by signal 12).
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::io("SIGTERM handler", e))?;
    let mut usr2 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined2())
        .map_err(|e| Error::io("SIGUSR2 handler", e))?;
    // Ports and API serve (the API's socket accepts from here): systemd may start what
    // needs the worker; after a SIGUSR2 re-exec this ends the reload.
    crate::sd_notify::ready(&format!("serving {} tenants", worker.tenant_names().len()));
    let reexec = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = {
        let reexec = reexec.clone();
        async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => crate::sd_notify::stopping("stopping"),
                _ = term.recv() => crate::sd_notify::stopping("stopping"),
                _ = usr2.recv() => {
                    reexec.store(true, std::sync::atomic::Ordering::SeqCst);
                    crate::sd_notify::reloading();
                }
            }
        }
    };
    crate::api::serve(listeners, worker.clone(), stop).await;
    supervisor.abort();
    if let Some(gc) = scheduled_gc {
        gc.stop().await;
    }
    if let Some(link) = hub_link {
        link.abort();
    }
    if reexec.load(std::sync::atomic::Ordering::SeqCst) {
        // The tenants keep running and their ports open: the next image adopts both.
        stop_serving(&worker).await;
        crate::handover::drain(&worker).await;
        let e = crate::handover::reexec(&worker);
        error!(error = %e, "could not re-execute the worker; it stops, its tenants keep running");
        // A failure, so that a supervisor restarts it (systemd's Restart=on-failure): the next
        // worker adopts the running tenants.
        return Err(Error::io("re-executing the worker (SIGUSR2)", e));
    }
    if worker.config.on_stop == OnStop::SwapOut {
        crate::sd_notify::stopping("swapping out the running tenants");
        swap_out_all(&worker).await;
    }
    stop_serving(&worker).await;
    if let Some(kernel) = &worker.kernel_forward {
        // Tenants left running keep their forwarding until the next worker makes its own.
        let mut running = false;
        for slot in worker.tenants.all() {
            running |= slot.runtime.lock().await.info.state == crate::tenant::TenantState::Running;
        }
        if !running {
            kernel.stop().await;
        }
    }
    // Gone only when no tenant's cgroup is left in it (every tenant asleep or removed).
    worker.cgroups.remove_worker_group();
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    Ok(())
}

/// What the worker's process needs set before it starts any thread (call it first in `main`):
/// fewer malloc arenas ([`crate::host_memory::fewer_arenas`]), and systemd's notification
/// socket taken out of the environment tenants inherit ([`crate::sd_notify::take_from_env`]).
pub fn prepare_process() {
    crate::host_memory::fewer_arenas();
    // Before any thread: it changes the environment.
    crate::sd_notify::take_from_env();
}

/// Raises this process's soft limit of open files to its hard limit: each forwarded connection
/// holds six (two sockets, two splice pipes), and a dense host forwards many at once. Tenants
/// inherit it.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write `limit`, which outlives both calls.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            let before = limit.rlim_cur;
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                info!(
                    from = before,
                    to = limit.rlim_max,
                    "raised the open files limit"
                );
            }
        }
    }
}

/// An exclusive lock on `SOCKET.lock`, held while the worker runs (released by the kernel when
/// it dies, however it dies). The socket's directory (the worker's home) is made if missing: a
/// worker started on a new home makes the rest of it too.
fn only_worker(socket: &std::path::Path) -> Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    if let Some(home) = socket.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(home).map_err(|e| Error::io(home, e))?;
    }
    let path = socket.with_extension("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::WouldBlock {
            return Err(Error::WorkerAlreadyRunning {
                socket: socket.to_path_buf(),
            });
        }
        return Err(Error::io(&path, e));
    }
    Ok(file)
}

/// Listens on every tenant's public port (a tenant without a network namespace, from an older
/// worker, listens on the host itself and is not served).
fn serve_public_ports(worker: &Arc<Worker>) {
    // Sockets a previous image of this worker handed over (SIGUSR2, `handover`).
    let mut inherited = crate::handover::inherited();
    // And sockets systemd holds for us (socket activation).
    for (port, listener) in crate::socket_activation::listeners() {
        inherited.entry(port).or_insert(listener);
    }
    for slot in worker.tenants.all() {
        if slot.netns.is_none() {
            warn!(tenant = %slot.name, "no network namespace (added by an older worker): its port is not served");
            continue;
        }
        if let Some(listener) = inherited.remove(&slot.port) {
            worker.serve(&slot, listener);
            continue;
        }
        match crate::serving::bind_public(worker.config.listen_addr, slot.port) {
            Ok(listener) => worker.serve(&slot, listener),
            Err(e) => {
                error!(tenant = %slot.name, port = slot.port, error = %e, "cannot listen on the tenant's port")
            }
        }
    }
    // Kept for the `tenant add` of their ports.
    if !inherited.is_empty() {
        info!(ports = ?inherited.keys().collect::<Vec<_>>(), "sockets kept for tenants not added yet");
    }
    crate::host::lock_std(&worker.spare_listeners).extend(inherited);
}

/// Swaps every running tenant out, `max_concurrent_swaps` at a time, before the worker exits.
async fn swap_out_all(worker: &Arc<Worker>) {
    let mut swaps = tokio::task::JoinSet::new();
    for slot in worker.tenants.all() {
        if slot.netns.is_none() {
            continue;
        }
        let worker = worker.clone();
        swaps.spawn(async move {
            let running = slot.runtime.lock().await.info.state == TenantState::Running;
            if running {
                if let Err(e) = worker
                    .swap_out_because(&slot, Reason::WorkerStopping, true)
                    .await
                {
                    warn!(tenant = %slot.name, error = %e, "could not swap out; left running");
                }
            }
        });
    }
    while swaps.join_next().await.is_some() {}
}

/// What a stopping worker does once the API no longer accepts requests. A tenant still being
/// filled by a lazy restore needs this process (its pages come through the FUSE mount): those
/// restores finish first, so the tenants keep running.
async fn stop_serving(worker: &Worker) {
    for name in worker.tenant_names() {
        let Ok(slot) = worker.slot(&name) else {
            continue;
        };
        slot.pause_serving();
        let restoring = {
            let mut rt = slot.runtime.lock().await;
            // The next worker starts its idle clocks and least-recently-active order from here.
            rt.info.last_active = Some(slot.activity.last_ms());
            if let Err(e) = rt.info.save(&slot.dirs) {
                warn!(tenant = %name, error = %e, "could not record its last activity");
            }
            rt.restoring.take()
        };
        if let Some(restoring) = restoring {
            info!(tenant = %name, "waiting for its restore to finish");
            if !finish_restoring(restoring).await {
                warn!(tenant = %name, "lazy restore still copying pages; stopping anyway");
            }
        }
    }
    worker.whole_staging.unmount().await;
    info!("worker stopping; tenants keep their state");
    let _ = std::fs::remove_file(&worker.config.socket);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A home that does not exist yet is made (it failed with "No such file or directory" on
    /// `worker.lock`), and a second worker on it is refused while the first holds the lock.
    #[test]
    fn a_worker_on_a_new_home_makes_it_and_a_second_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let socket = tmp.path().join("new/home/worker.sock");
        let _first = only_worker(&socket).unwrap();
        assert!(socket.with_extension("lock").is_file());
        assert!(matches!(
            only_worker(&socket),
            Err(Error::WorkerAlreadyRunning { .. })
        ));
    }
}
