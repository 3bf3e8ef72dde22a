//! What one worker holds: its configuration, the page store, CRIU (with its warm spares and the
//! whole-restore staging tmpfs), and the table of the tenants it hosts.
//!
//! It exists so that every flow (start, swap-out, swap-in, removal) works on the same state
//! without knowing the control socket that asks for it. A tenant's state is a [`TenantSlot`] in
//! the [`TenantTable`]: what does not change while it is hosted (its directories and port), its
//! [`TenantRuntime`] behind an async lock that one flow at a time holds, and what the last
//! restore left to report or reuse behind locks of their own.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use pager::activeset::ActiveSet;
use pager::reads::MountReadReport;
use pagestore::prefetch::PrefetchReport;
use pagestore::PageStore;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::activity::Activity;
use crate::config::WorkerConfig;
use crate::criu::Criu;
use crate::criu_swrk::CriuSpares;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::netns::HostNetns;
use crate::tenant::{FillWait, TenantDirs, TenantInfo};
use crate::whole_staging::WholeStaging;

/// How long a swap-out (or a stopping worker) waits for the previous lazy restore to finish
/// copying pages in.
pub(crate) const LAZY_COPY_LIMIT: Duration = Duration::from_secs(120);

/// One worker: the tenants of this machine and what serves them.
pub struct Worker {
    pub(crate) config: WorkerConfig,
    pub(crate) store: Arc<PageStore>,
    pub(crate) criu: Criu,
    pub(crate) tenants: TenantTable,
    pub(crate) whole_staging: WholeStaging,
    /// `None` with `warm_criu = false`.
    pub(crate) criu_spares: Option<CriuSpares>,
    /// The worker's own network namespace, to come back to after making a socket in a tenant's.
    pub(crate) host_netns: HostNetns,
    /// Its nftables table, when the kernel forwards running tenants' ports (`kernel_forward`).
    pub(crate) kernel_forward: Option<crate::kernel_forward::KernelForward>,
    /// Swap-ins and swap-outs in progress, at most `max_concurrent_swaps`.
    pub(crate) swap_slots: tokio::sync::Semaphore,
    /// Swap-ins waiting for a slot: swap-outs the worker decides on its own wait for none.
    pub(crate) swap_ins_waiting: std::sync::atomic::AtomicUsize,
    /// What the flows record for `GET /metrics`.
    pub(crate) metrics: Metrics,
    /// The paths no sandboxed tenant may see ([`WorkerConfig::secrets`]).
    pub(crate) secrets: Vec<PathBuf>,
    /// Where tenants' cgroups are (see `cgroup`).
    pub(crate) cgroups: crate::cgroup::Cgroups,
    /// Listening sockets handed over (by systemd or a previous image) for ports no tenant has
    /// yet: the `tenant add` of such a port takes its socket.
    pub(crate) spare_listeners: Mutex<std::collections::HashMap<u16, std::net::TcpListener>>,
    /// ActiveSets lent between tenants of one program (see `program_sets`).
    pub(crate) program_sets: Arc<crate::program_sets::ProgramSets>,
    /// Up while a hub's lease has run out (see `cluster`).
    pub(crate) fence: crate::cluster::Fence,
    /// The hub this worker reports to, once the link is up (see `cluster`).
    pub(crate) hub: std::sync::OnceLock<crate::cluster::HubAddress>,
}

impl Worker {
    /// Whether a swap-in or swap-out holds one of the swap slots now.
    pub(crate) fn is_swapping(&self) -> bool {
        self.swap_slots.available_permits() < self.config.max_concurrent_swaps.max(1)
    }

    /// A worker over `store` and `criu`, with the tenants a previous worker left in
    /// `config.tenants_dir`; spare CRIUs start now when `warm_criu` is on.
    /// `kernel_forward`: the worker's nftables table, when the kernel forwards running tenants'
    /// ports.
    pub(crate) fn open(
        config: WorkerConfig,
        store: Arc<PageStore>,
        criu: Criu,
        kernel_forward: Option<crate::kernel_forward::KernelForward>,
    ) -> Result<Worker> {
        let secrets = config.secrets(store.config());
        let tenants = TenantTable::load(&config, &secrets)?;
        let host_netns = HostNetns::current().map_err(|e| Error::io("/proc/self/ns/net", e))?;
        let mut cgroups = crate::cgroup::Cgroups::detect(&config.cgroup_key());
        cgroups.record_group(&config.tenants_dir);
        let yard = cgroups.prepare_restores(
            &config.mounts_dir.join(".cgroup-yard"),
            &config.mounts_dir.join(".cgroup2"),
            config.favor_cgroup_moves,
        );
        let criu = match yard {
            Some(yard) => criu.with_cgroup_yard(yard),
            None => criu,
        };
        Ok(Worker {
            kernel_forward,
            host_netns,
            spare_listeners: Mutex::new(Default::default()),
            program_sets: Default::default(),
            fence: Default::default(),
            hub: Default::default(),
            secrets,
            swap_slots: tokio::sync::Semaphore::new(config.max_concurrent_swaps.max(1)),
            swap_ins_waiting: std::sync::atomic::AtomicUsize::new(0),
            cgroups,
            criu_spares: config
                .warm_criu
                .then(|| CriuSpares::start(&criu, config.max_concurrent_swaps.max(1))),
            whole_staging: WholeStaging::new(
                config.mounts_dir.join(".whole"),
                config.whole_restore_below_mib << 20,
                config.whole_staging_capacity(),
                config.max_concurrent_swaps.saturating_sub(1),
            ),
            config,
            store,
            criu,
            tenants,
            metrics: Metrics::default(),
        })
    }

    pub(crate) fn tenant_names(&self) -> Vec<String> {
        self.tenants.names()
    }

    /// The slot of tenant `name`, or [`Error::UnknownTenant`].
    pub(crate) fn slot(&self, name: &str) -> Result<Arc<TenantSlot>> {
        self.tenants.get(name)
    }
}

/// Makes a new network namespace for a sleeping tenant whose pin is gone (the machine
/// rebooted, or the worker ran in a mount namespace that ended): its restore joins the new one
/// (a tenant's namespace holds only its loopback, which CRIU's dump does not carry), so without it
/// the tenant's port would not be served again. A running tenant keeps the namespace its
/// processes are in.
fn renew_lost_netns(dirs: &TenantDirs, info: &TenantInfo) {
    use crate::tenant::TenantState;
    let pin = dirs.netns();
    let asleep = matches!(
        info.state,
        TenantState::SwappedOut | TenantState::SwappingOut | TenantState::SwappingIn
    );
    if !asleep || crate::netns::is_pinned(&pin) {
        return;
    }
    let _ = crate::netns::remove(&pin);
    match crate::netns::create(&pin) {
        Ok(()) => info!(tenant = %info.name, "its network namespace was gone: made anew"),
        Err(e) => {
            warn!(tenant = %info.name, error = %e, "its network namespace was gone and cannot be made: its port is not served")
        }
    }
}

/// The tenants a worker hosts, by name.
pub(crate) struct TenantTable {
    slots: Mutex<BTreeMap<String, Arc<TenantSlot>>>,
    /// The host ids of the tenants' user namespaces, those of the loaded tenants taken.
    pub user_ids: crate::userns::IdRanges,
}

impl TenantTable {
    /// Every tenant saved under `config.tenants_dir` ([`crate::tenant::load_registry`]), as
    /// saved: `recovery` then settles what a stopped worker left half done.
    fn load(config: &WorkerConfig, secrets: &[PathBuf]) -> Result<TenantTable> {
        let mut slots = BTreeMap::new();
        let mut user_ids = Vec::new();
        for (dirs, info) in crate::tenant::load_registry(&config.tenants_dir)? {
            user_ids.extend(info.user_namespace);
            renew_lost_netns(&dirs, &info);
            slots.insert(
                info.name.clone(),
                Arc::new(TenantSlot::new(dirs, info, secrets)),
            );
        }
        Ok(TenantTable {
            slots: Mutex::new(slots),
            user_ids: crate::userns::IdRanges::new(config.user_namespace_first_id, user_ids),
        })
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Arc<TenantSlot>>> {
        lock_std(&self.slots)
    }

    pub(crate) fn names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Every tenant's slot, by name.
    pub(crate) fn slots(&self) -> Vec<Arc<TenantSlot>> {
        self.lock().values().cloned().collect()
    }

    pub(crate) fn get(&self, name: &str) -> Result<Arc<TenantSlot>> {
        self.lock()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::UnknownTenant(name.to_string()))
    }

    /// Fails unless a new tenant `name` may take `port`: no tenant has that name, and none holds
    /// the port (a swapped-out tenant keeps its port for its restore).
    pub(crate) fn check_free(&self, name: &str, port: u16) -> Result<()> {
        let slots = self.lock();
        if slots.contains_key(name) {
            return Err(Error::TenantExists(name.to_string()));
        }
        if let Some((holder, _)) = slots.iter().find(|(_, slot)| slot.port == port) {
            return Err(Error::PortHeld {
                port,
                tenant: holder.clone(),
            });
        }
        Ok(())
    }

    /// Adds a slot made already.
    pub(crate) fn insert_slot(&self, name: &str, slot: Arc<TenantSlot>) -> Arc<TenantSlot> {
        self.lock().insert(name.to_string(), slot.clone());
        slot
    }

    /// Every tenant's slot.
    pub(crate) fn all(&self) -> Vec<Arc<TenantSlot>> {
        self.lock().values().cloned().collect()
    }

    pub(crate) fn remove(&self, name: &str) {
        self.lock().remove(name);
    }
}

/// A tenant as the running worker holds it.
pub(crate) struct TenantSlot {
    pub dirs: TenantDirs,
    pub name: String,
    /// Its public port: the worker listens on it and forwards to the same port inside the
    /// tenant's network namespace.
    pub port: u16,
    /// Where its network namespace is pinned (`None` for a tenant added before tenants had
    /// one: it listens on the host itself and the worker does not serve its port).
    pub netns: Option<std::path::PathBuf>,
    /// That namespace, open, to make sockets in it.
    pub netns_file: Option<std::fs::File>,
    /// Its sandbox's view, when it runs in one (CRIU dumps and restores its mounts).
    pub view: Option<crate::sandbox::View>,
    /// Each connection forwarded to it starts with a PROXY protocol v2 header.
    pub proxy_protocol: bool,
    /// The address it sees its clients at (its link's, or the loopback).
    pub client_address: crate::tenant::ClientAddress,
    /// The first host id of its user namespace, when it runs in one (see `userns`).
    pub user_namespace: Option<u32>,
    /// Held shared by every forwarded connection, exclusively by a swap-out or swap-in: the
    /// tenant's state changes only while no connection is forwarded to it.
    pub gate: tokio::sync::RwLock<()>,
    /// Its connections and when a byte last crossed one.
    pub activity: Activity,
    /// Whether the kernel forwards its port now, and its link's traffic (`kernel_forward`).
    pub kernel: crate::kernel_forward::TenantPath,
    /// When its newest durable state was made (its last checkpoint, or the wake-up that
    /// restored one), Unix ms: a periodic checkpoint is due from here (see `checkpoint`).
    pub checkpointed_at: std::sync::atomic::AtomicU64,
    /// The accept loop of its public port.
    pub serving: Mutex<Option<JoinHandle<()>>>,
    /// A second descriptor of its public port's listening socket, kept so that a worker that
    /// re-executes itself hands the socket to its next image (`handover`).
    pub listening: Mutex<Option<std::net::TcpListener>>,
    /// A swap-out the worker decided on its own is queued or running.
    pub auto_swap: std::sync::atomic::AtomicBool,
    /// Swap-outs that could not commit lately (a cold tier down, a full disk), and when the
    /// worker tries again.
    pub swap_out_backoff: Mutex<crate::backoff::Backoff>,
    pub runtime: tokio::sync::Mutex<TenantRuntime>,
    /// What the last restore's background fill read, once it is done. Kept apart from `runtime`:
    /// a swap-out holds that lock while it waits for the fill.
    pub last_fill: Mutex<Option<PrefetchReport>>,
    /// Which tier served the last lazy restore's reads, per phase, once its mount is gone.
    pub last_reads: Mutex<Option<MountReadReport>>,
    /// The tenant's ActiveSet as this worker last learned or loaded it (the store keeps the
    /// durable copy; this saves a cold-tier round trip on every swap-in).
    pub activeset: Mutex<Option<Arc<ActiveSet>>>,
    /// No ActiveSet of it is stored: it was added on this worker and has learned none yet, so
    /// a swap-in need not look for one in the store (a cold-tier round trip).
    pub activeset_none_stored: std::sync::atomic::AtomicBool,
    /// The program it runs, among whose tenants it lends and borrows ActiveSets (see
    /// `program_sets`).
    pub program: String,
    /// The set it borrowed for its newest checkpoint's locality pack, which its next swap-in
    /// installs (see `program_sets`).
    pub borrowed: Mutex<Option<crate::program_sets::BorrowedSet>>,
    /// Told when the tenant answers a client after a lazy swap-in: that swap-in's fill (the
    /// rest of the image, fetched into memory) waits for the first answer (see `swap_in::fill`).
    pub first_answer: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    /// What the last lazy restore's fill waited for, and the cold reads until then.
    pub last_fill_wait: Mutex<Option<FillWait>>,
}

impl TenantSlot {
    /// Where a restore puts this tenant's tree: in its network namespace and view, and in the
    /// cgroups `cgroups` (this worker's, see [`Worker::cgroup_roots`]).
    pub(crate) fn placement<'a>(
        &'a self,
        cgroups: &'a [crate::criu::CgroupRoot],
    ) -> crate::criu::Placement<'a> {
        crate::criu::Placement {
            netns: self.netns.as_deref(),
            view: self.view.as_ref(),
            cgroups,
        }
    }

    /// The slot of a tenant in `dirs` whose record is `info`; nothing restored yet.
    pub(crate) fn new(dirs: TenantDirs, info: TenantInfo, secrets: &[PathBuf]) -> TenantSlot {
        let netns = Some(dirs.netns()).filter(|p| crate::netns::is_pinned(p));
        let netns_file = netns.as_deref().and_then(|p| crate::netns::open(p).ok());
        let view = info.view(&dirs, secrets);
        TenantSlot {
            program: crate::program_sets::program_of(&info),
            borrowed: Mutex::new(None),
            activeset_none_stored: std::sync::atomic::AtomicBool::new(false),
            netns_file,
            view,
            proxy_protocol: info.proxy_protocol,
            client_address: info.client_address,
            user_namespace: info.user_namespace,
            name: info.name.clone(),
            activity: Activity::new(info.last_active.unwrap_or_else(pagestore::clock::now_ms)),
            kernel: Default::default(),
            checkpointed_at: std::sync::atomic::AtomicU64::new(pagestore::clock::now_ms()),
            netns,
            gate: tokio::sync::RwLock::new(()),
            serving: Mutex::new(None),
            listening: Mutex::new(None),
            auto_swap: std::sync::atomic::AtomicBool::new(false),
            swap_out_backoff: Mutex::new(crate::backoff::Backoff::default()),
            dirs,
            port: info.port,
            runtime: tokio::sync::Mutex::new(TenantRuntime {
                info,
                restoring: None,
                manifest: None,
            }),
            last_fill: Mutex::new(None),
            last_reads: Mutex::new(None),
            activeset: Mutex::new(None),
            first_answer: Mutex::new(None),
            last_fill_wait: Mutex::new(None),
        }
    }

    /// Stops accepting on its public port and closes it.
    pub(crate) fn stop_serving(&self) {
        self.pause_serving();
        lock_std(&self.listening).take();
    }

    /// Stops accepting on its public port, which stays open (its backlog holds new
    /// connections) for a next worker image to take over.
    pub(crate) fn pause_serving(&self) {
        if let Some(task) = lock_std(&self.serving).take() {
            task.abort();
        }
    }

    /// The ActiveSet this worker holds for the tenant, if any (shared: a dense tenant's set holds
    /// tens of thousands of pages per restore it remembers, and copying it cost a swap-in 1-5 ms).
    pub(crate) fn kept_activeset(&self) -> Option<Arc<ActiveSet>> {
        lock_std(&self.activeset).clone()
    }

    /// The tenant's working set in pages, as its own ActiveSet last saw it, else as the set it
    /// borrowed from another tenant of its program did; `None` when neither is held here.
    pub(crate) fn working_set_pages(&self) -> Option<usize> {
        if let Some(own) = lock_std(&self.activeset).as_ref() {
            return Some(own.working_set_pages());
        }
        lock_std(&self.borrowed)
            .as_ref()
            .map(|b| b.set.working_set_pages())
    }

    /// Keeps `set` as the tenant's ActiveSet for the next swap-in.
    pub(crate) fn keep_activeset(&self, set: ActiveSet) {
        *lock_std(&self.activeset) = Some(Arc::new(set));
    }

    /// Whether the store is known to hold no ActiveSet of the tenant (see
    /// [`TenantSlot::activeset_none_stored`]).
    pub(crate) fn no_activeset_stored(&self) -> bool {
        self.activeset_none_stored
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn last_fill(&self) -> Option<PrefetchReport> {
        lock_std(&self.last_fill).clone()
    }

    pub(crate) fn set_last_fill(&self, report: PrefetchReport) {
        *lock_std(&self.last_fill) = Some(report);
    }

    pub(crate) fn last_fill_wait(&self) -> Option<FillWait> {
        *lock_std(&self.last_fill_wait)
    }

    pub(crate) fn set_last_fill_wait(&self, wait: FillWait) {
        *lock_std(&self.last_fill_wait) = Some(wait);
    }

    pub(crate) fn last_reads(&self) -> Option<MountReadReport> {
        *lock_std(&self.last_reads)
    }

    pub(crate) fn set_last_reads(&self, report: MountReadReport) {
        *lock_std(&self.last_reads) = Some(report);
    }

    /// A receiver told when the tenant next answers a client (or never, its sender dropped,
    /// when a later swap-in asks again).
    pub(crate) fn await_first_answer(&self) -> tokio::sync::oneshot::Receiver<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        *lock_std(&self.first_answer) = Some(tx);
        rx
    }

    /// The tenant answered a client: tells whoever waits for that.
    pub(crate) fn answered(&self) {
        if let Some(tx) = lock_std(&self.first_answer).take() {
            let _ = tx.send(());
        }
    }

    /// Forgets what the previous restore reported: a new one has begun.
    pub(crate) fn forget_last_restore(&self) {
        *lock_std(&self.last_fill) = None;
        *lock_std(&self.last_fill_wait) = None;
        *lock_std(&self.last_reads) = None;
    }
}

/// A lock of a slot's report or ActiveSet; a panic elsewhere leaves the value usable.
pub(crate) fn lock_std<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What one flow at a time may change of a tenant.
pub(crate) struct TenantRuntime {
    pub info: TenantInfo,
    /// The tail of the last restore: for a lazy one, waits for CRIU's lazy-pages daemon to copy
    /// in every page, then unmounts the checkpoint; for a whole one, saves the tenant's state.
    pub restoring: Option<JoinHandle<()>>,
    /// The manifest of the checkpoint the tenant's memory last matched (it is immutable): kept
    /// from its last swap-out or checkpoint, or read by the swap-in that restored it (after a
    /// restart of the worker; an older checkpoint).
    pub manifest: Option<(pagestore::CheckpointId, Arc<pagestore::Manifest>)>,
}

impl TenantRuntime {
    /// The manifest of the checkpoint the tenant's memory last matched, when this process has
    /// it: what its next dump is compared with (the pages written since).
    pub fn last_manifest(&self) -> Option<Arc<pagestore::Manifest>> {
        self.manifest.as_ref().map(|(_, m)| Arc::clone(m))
    }
}

/// Waits for the tail of a restore (`TenantRuntime::restoring`), at most [`LAZY_COPY_LIMIT`];
/// false if it was still running then.
pub(crate) async fn finish_restoring(restoring: JoinHandle<()>) -> bool {
    tokio::time::timeout(LAZY_COPY_LIMIT, restoring)
        .await
        .is_ok()
}
