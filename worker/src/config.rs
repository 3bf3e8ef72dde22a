//! Typed configuration of the worker (the `[worker]` section of `pico.toml`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// Unix socket on which the worker serves its HTTP API to `pico tenant ...` (mode 0600: no
    /// token asked).
    pub socket: PathBuf,
    /// One directory per tenant: its working directory, log, state and CRIU logs.
    pub tenants_dir: PathBuf,
    /// Where CRIU dumps are staged until their checkpoint is committed.
    pub staging_dir: PathBuf,
    /// Where checkpoints are mounted while a tenant is being restored.
    pub mounts_dir: PathBuf,
    /// The cold-tier reads of each swap-in, one JSON line each (priced by `pico report cost`).
    pub usage_log: PathBuf,
    /// The CRIU binary (>= 4.2).
    #[serde(default = "default_criu")]
    pub criu: PathBuf,
    /// How long `tenant add` waits for a new tenant to listen on its port.
    #[serde(default = "default_start_timeout_ms")]
    pub start_timeout_ms: u64,
    /// CRIU log level (0-4) for dump, restore and lazy-pages logs in the tenant's directory.
    #[serde(default = "default_criu_log_level")]
    pub criu_log_level: u8,
    /// Learn each tenant's ActiveSet and install it eagerly on swap-in.
    #[serde(default = "default_activeset")]
    pub activeset: bool,
    /// How many recent restores an ActiveSet merges.
    #[serde(default = "default_activeset_window")]
    pub activeset_window: usize,
    /// The learning window stays open until the tenant has gone this long without a page fault
    /// (its first request answered): its faults until then are its working set.
    #[serde(default = "default_activeset_grace_ms")]
    pub activeset_grace_ms: u64,
    /// The learning window closes this long after the restore at the latest (the background
    /// copy waits for it; in a restore that learns nothing, only until the whole image is in
    /// memory), however busy the tenant stays.
    #[serde(default = "default_activeset_window_max_ms")]
    pub activeset_window_max_ms: u64,
    /// The most pages an ActiveSet installs eagerly (bounds a swap-in's eager work).
    #[serde(default = "default_activeset_max_pages")]
    pub activeset_max_pages: usize,
    /// At swap-out, also store the pages the next swap-in reads first (the restore set, at most
    /// `activeset_max_pages`) as one locality pack, and prefetch from it at swap-in: one or a few
    /// cold GETs instead of one per scattered run, for duplicated bytes (reported).
    #[serde(default = "default_locality_pack")]
    pub locality_pack: bool,
    /// The locality pack also holds, after the restore set, up to this many pages the tenant
    /// wrote since its previous checkpoint (their content is new to it): its next wake-up likely
    /// touches them again, and a set learned from earlier restores may not name them (0: none).
    #[serde(default = "default_locality_written_pages")]
    pub locality_written_pages: usize,
    /// A restored tenant's fault of a page that no tier of this host holds also fetches the
    /// image's pages around it, up to this many KiB as stored, each further one of the same
    /// restore twice as many up to eight times (`pager::readahead`): faults the restore set did
    /// not foresee cluster, and CRIU serves them one at a time (0: none).
    #[serde(default = "default_fault_readahead_kib")]
    pub fault_readahead_kib: u64,
    /// While the tenant's own ActiveSet may still miss (it holds fewer than `activeset_window`
    /// restores, or one of them faulted pages it had not foreseen) and its swap-in holds the rest of its image back for the first answer
    /// (the rest is large), the locality pack also holds the lazy pages within this many pages of
    /// a page of the set, so that its misses (nearly all next to a page of it) fault in from
    /// memory rather than from the cold tier (0: none).
    #[serde(default = "default_activeset_neighbours")]
    pub activeset_neighbours: u64,
    /// How a swap-in installs the ActiveSet's pages.
    #[serde(default)]
    pub activeset_install: ActiveSetInstall,
    /// A checkpoint with less than this many MiB of non-zero pages, all of them on this worker
    /// (memory or local tier), is restored whole: plain `criu restore` from a tmpfs, no
    /// lazy-pages daemon, no userfaultfd (0: always lazy). The worker keeps a staging tmpfs of
    /// this size for it.
    #[serde(default = "default_whole_restore_below_mib")]
    pub whole_restore_below_mib: u64,
    /// Each swap-out of a checkpoint small enough to be restored whole also keeps its pages in
    /// one file on the local disk (`pagestore::whole_image`), which its next whole restore reads
    /// instead of looking each page up in the local tier.
    #[serde(default = "default_keep_whole_images")]
    pub keep_whole_images: bool,
    /// A larger checkpoint, all of whose pages are on this worker, is restored whole too when
    /// its tenant's working set (its ActiveSet's, or the one it borrowed) covers at least this
    /// share of its non-zero pages (0: never): faulting that many pages in one at a time costs
    /// more than writing the whole image out (see `swap_in::whole`).
    #[serde(default = "default_whole_restore_dense_share")]
    pub whole_restore_dense_share: f64,
    /// ... up to this many MiB of non-zero pages (its image is written into the staging tmpfs,
    /// which holds it until a smaller one is written over it).
    #[serde(default = "default_whole_restore_dense_below_mib")]
    pub whole_restore_dense_below_mib: u64,
    /// Whole restores use a CRIU started ahead of them (`criu swrk`, idle until asked), which
    /// saves starting CRIU (~2.2 ms here) on the swap-in's path; false starts `criu restore`.
    #[serde(default = "default_warm_criu")]
    pub warm_criu: bool,
    /// CRIU stops the tasks it restores (and the ones it dumps) with a hardware breakpoint,
    /// as it does by default; false (the default here) has it trace their system calls
    /// instead, which saved ~9 ms per restore on this machine (see `criu.rs`).
    #[serde(default)]
    pub criu_hw_breakpoints: bool,
    /// At start, turn the kernel's `favordynmods` on for the machine, so that moving a restored
    /// tree into its cgroup waits for no RCU grace period (~10 ms here; forks and exits cost a
    /// little more, see `cgroup::fast_moves`).
    #[serde(default = "default_favor_cgroup_moves")]
    pub favor_cgroup_moves: bool,
    /// The address the worker listens on for every tenant's public port (the tenant itself
    /// listens inside its own network namespace, reached only through the worker and the
    /// forwarding it sets up in the kernel).
    #[serde(default = "default_listen_addr")]
    pub listen_addr: std::net::IpAddr,
    /// While a tenant runs, the kernel forwards its port (DNAT over a veth pair into its
    /// namespace, see `kernel_forward`); off, the worker relays every connection.
    #[serde(default = "default_kernel_forwarding")]
    pub kernel_forwarding: bool,
    /// How the kernel takes a connection into a running tenant's namespace: `nat` (the default:
    /// DNAT into its link, the source masqueraded) or `routed` (no address rewritten, for an
    /// IPv4 loopback `listen_addr`; other addresses take the NAT path).
    #[serde(default)]
    pub kernel_forward_path: ForwardPath,
    /// How long a connection to a sleeping tenant is held while it wakes before it is closed.
    #[serde(default = "default_hold_timeout_ms")]
    pub hold_timeout_ms: u64,
    /// Restores of a tenant that may fail in a row before it is `failed` (not woken any more).
    #[serde(default = "default_max_restore_failures")]
    pub max_restore_failures: u32,
    /// Swap-ins and swap-outs that may run at once (swap-ins go first); by default one more
    /// than the cores ([`default_max_concurrent_swaps`]).
    #[serde(default = "default_max_concurrent_swaps")]
    pub max_concurrent_swaps: usize,
    /// When the host's available memory (`MemAvailable`) falls under this many MiB, the least
    /// recently active running tenants are swapped out until it is back above (0: off); a
    /// swap-in first makes room for the tenant's last RSS above it.
    #[serde(default = "default_memory_floor_mib")]
    pub memory_floor_mib: u64,
    /// Also swap out the least recently active tenants while the host's memory pressure
    /// (`/proc/pressure/memory`, `some avg10`, percent) is above this (none: off).
    #[serde(default)]
    pub memory_pressure_psi: Option<f64>,
    /// What a worker stopped by SIGTERM or SIGINT does with its running tenants: swap them all
    /// out first, or leave them running (a restarted worker adopts them).
    #[serde(default)]
    pub on_stop: OnStop,
    /// Also serve the HTTP API on this TCP address (e.g. `127.0.0.1:7070`), every request
    /// authenticated by the bearer token in `api_token_file`; none: the unix socket only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_listen: Option<SocketAddr>,
    /// A file holding the API's bearer token (its content, trimmed; not empty). Required with
    /// `api_listen`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_token_file: Option<PathBuf>,
    /// Paths no sandboxed tenant may see, beyond the worker's own (its store, tenants,
    /// staging, mounts, socket, usage log and token): default the home's `pico.toml`, which may
    /// hold the cold tier's keys.
    #[serde(default)]
    pub hidden_from_tenants: Vec<PathBuf>,
    /// The hub this worker reports to and takes its lease from (`[worker.hub]`); none: a
    /// worker on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub: Option<HubLinkConfig>,
    /// The first host id given to tenants' user namespaces (`user_namespace = true`): each
    /// takes the next free range of 65536 ids from here (see `userns`). Keep the ranges apart
    /// from the host's users and from `/etc/subuid`'s (100000 + 65536 per user, usually).
    #[serde(default = "default_user_namespace_first_id")]
    pub user_namespace_first_id: u32,
}

/// What a stopping worker does with running tenants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnStop {
    /// Swap every running tenant out (their next connection wakes them under the next worker).
    #[default]
    SwapOut,
    /// Leave them running; the next worker adopts them.
    LeaveRunning,
}

/// How the kernel forwards a running tenant's port (`kernel_forward`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardPath {
    /// Each packet's addresses are rewritten into the link and back (`kernel_forward::rules`).
    /// Its cost does not grow with the tenants.
    #[default]
    Nat,
    /// A routing rule per port sends its connections into the tenant's link unchanged
    /// (`kernel_forward::routing`); the kernel's local-table rule moves from priority 0 to 100.
    /// Every new TCP connection to the loopback on the host walks its rules (two per running
    /// tenant).
    Routed,
}

/// Where this worker's hub is and how it presents itself there (`[worker.hub]`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HubLinkConfig {
    /// The hub's API (`HOST:PORT`, its `[hub] api_listen`).
    pub addr: SocketAddr,
    /// A file holding the bearer token of the hub's API (`$PICO_TOKEN` wins when set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// This worker's name at the hub (default: the host name); one per worker of a cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The address clients reach this worker's tenants on, which the hub's DNS answers with
    /// (default: `listen_addr`, which must then name one address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_addr: Option<std::net::IpAddr>,
    /// How often the worker reports to the hub.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// The hub's API is HTTPS: trust the certificates in this PEM file (its CA, or its
    /// self-signed certificate); none: plain HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

fn default_heartbeat_ms() -> u64 {
    1000
}

impl HubLinkConfig {
    /// Reporting to the hub at `addr`, everything else by default.
    pub fn at(addr: SocketAddr) -> HubLinkConfig {
        HubLinkConfig {
            addr,
            token_file: None,
            name: None,
            public_addr: None,
            heartbeat_ms: default_heartbeat_ms(),
            ca_file: None,
        }
    }
}

fn default_listen_addr() -> std::net::IpAddr {
    std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
}
fn default_kernel_forwarding() -> bool {
    true
}
fn default_hold_timeout_ms() -> u64 {
    30_000
}
fn default_max_restore_failures() -> u32 {
    3
}
/// One more swap than the cores: a restore does not keep a core busy throughout (its CRIU
/// processes wait on each other), and a wake-up that waits for a slot waits for a whole
/// restore. Two slots on two cores made the queue for a slot the tail of a burst: 1000 tenants,
/// 20 wake-ups/s (`pico bench density`, bench/results/density/swap-slots), p95 89-96 ms with
/// 2 slots, 64 with 3, 59 with 4, the host 35-42% busy in each.
fn default_max_concurrent_swaps() -> usize {
    std::thread::available_parallelism().map_or(2, |cores| cores.get() + 1)
}
fn default_user_namespace_first_id() -> u32 {
    200_000_000
}
fn default_memory_floor_mib() -> u64 {
    512
}

fn default_warm_criu() -> bool {
    true
}

fn default_favor_cgroup_moves() -> bool {
    true
}

fn default_keep_whole_images() -> bool {
    true
}

fn default_locality_pack() -> bool {
    true
}

fn default_locality_written_pages() -> usize {
    1024
}

fn default_fault_readahead_kib() -> u64 {
    1024
}

/// How the ActiveSet's pages reach the tenant on swap-in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActiveSetInstall {
    /// The served pagemaps mark the set's pages not lazy: `criu restore` installs them in bulk
    /// before the tenant runs.
    #[default]
    Eager,
    /// The pagemaps stay as dumped; the set's pages are prefetched into memory and each reaches
    /// the tenant through its own userfaultfd fault (served from memory).
    Prefetch,
}

fn default_activeset() -> bool {
    true
}
fn default_activeset_window() -> usize {
    4
}
fn default_activeset_grace_ms() -> u64 {
    1000
}
fn default_activeset_window_max_ms() -> u64 {
    5000
}
fn default_activeset_max_pages() -> usize {
    65536
}
fn default_activeset_neighbours() -> u64 {
    2
}
fn default_whole_restore_below_mib() -> u64 {
    32
}

fn default_whole_restore_dense_share() -> f64 {
    0.25
}
fn default_whole_restore_dense_below_mib() -> u64 {
    512
}

fn default_criu() -> PathBuf {
    PathBuf::from("criu")
}
fn default_start_timeout_ms() -> u64 {
    10_000
}
fn default_criu_log_level() -> u8 {
    2
}

impl WorkerConfig {
    /// The most the staging tmpfs of whole restores holds (bytes of non-zero pages): a small
    /// image's, or a dense tenant's when those are restored whole; 0 with whole restores off.
    pub fn whole_staging_capacity(&self) -> u64 {
        if self.whole_restore_below_mib == 0 {
            return 0;
        }
        let dense = match self.whole_restore_dense_share > 0.0 {
            true => self.whole_restore_dense_below_mib,
            false => 0,
        };
        self.whole_restore_below_mib.max(dense) << 20
    }

    /// The embedded defaults under a `pico` home directory.
    pub fn embedded(home: &Path) -> WorkerConfig {
        WorkerConfig {
            socket: home.join("worker.sock"),
            tenants_dir: home.join("tenants"),
            staging_dir: home.join("staging"),
            mounts_dir: home.join("mnt"),
            usage_log: home.join("usage.jsonl"),
            criu: default_criu(),
            start_timeout_ms: default_start_timeout_ms(),
            criu_log_level: default_criu_log_level(),
            activeset: default_activeset(),
            activeset_window: default_activeset_window(),
            activeset_neighbours: default_activeset_neighbours(),
            activeset_grace_ms: default_activeset_grace_ms(),
            activeset_window_max_ms: default_activeset_window_max_ms(),
            activeset_max_pages: default_activeset_max_pages(),
            locality_pack: default_locality_pack(),
            locality_written_pages: default_locality_written_pages(),
            fault_readahead_kib: default_fault_readahead_kib(),
            activeset_install: ActiveSetInstall::default(),
            whole_restore_below_mib: default_whole_restore_below_mib(),
            keep_whole_images: default_keep_whole_images(),
            whole_restore_dense_share: default_whole_restore_dense_share(),
            whole_restore_dense_below_mib: default_whole_restore_dense_below_mib(),
            warm_criu: true,
            criu_hw_breakpoints: false,
            favor_cgroup_moves: default_favor_cgroup_moves(),
            listen_addr: default_listen_addr(),
            kernel_forwarding: default_kernel_forwarding(),
            kernel_forward_path: ForwardPath::default(),
            hold_timeout_ms: default_hold_timeout_ms(),
            max_restore_failures: default_max_restore_failures(),
            max_concurrent_swaps: default_max_concurrent_swaps(),
            user_namespace_first_id: default_user_namespace_first_id(),
            memory_floor_mib: default_memory_floor_mib(),
            memory_pressure_psi: None,
            on_stop: OnStop::default(),
            api_listen: None,
            api_token_file: None,
            hidden_from_tenants: vec![home.join("pico.toml")],
            hub: None,
        }
    }

    /// What names this worker's cgroup (`cgroup`): its tenants directory, and with a name in a
    /// cluster that name too: two workers of one machine, each in a mount namespace of its own
    /// (a test of a cluster), may see the same tenants directory.
    pub fn cgroup_key(&self) -> PathBuf {
        match self.hub.as_ref().and_then(|hub| hub.name.as_deref()) {
            Some(name) => self.tenants_dir.join(format!("@{name}")),
            None => self.tenants_dir.clone(),
        }
    }

    /// Every path of the worker a sandboxed tenant may not see (see `sandbox`): its own and
    /// the store's, and `hidden_from_tenants`.
    pub fn secrets(&self, store: &pagestore::StoreConfig) -> Vec<PathBuf> {
        let mut secrets = vec![
            self.socket.clone(),
            self.tenants_dir.clone(),
            self.staging_dir.clone(),
            self.mounts_dir.clone(),
            self.usage_log.clone(),
            store.local.path.clone(),
        ];
        secrets.extend(self.api_token_file.clone());
        secrets.extend(self.hub.as_ref().and_then(|hub| hub.token_file.clone()));
        secrets.extend(store.local.index_cache.clone());
        if let pagestore::config::ColdConfig::Dir { path } = &store.cold {
            secrets.push(path.clone());
        }
        secrets.extend(self.hidden_from_tenants.iter().cloned());
        secrets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swaps_run_one_more_at_once_than_the_cores_by_default() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let config = WorkerConfig::embedded(Path::new("/nonexistent"));
        assert_eq!(config.max_concurrent_swaps, cores + 1);
        assert!(
            config.max_concurrent_swaps >= 2,
            "a wake-up beside a swap-out"
        );
    }
}
