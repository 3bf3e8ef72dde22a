//! Tenants: what the worker knows of each hosted application, kept on disk so that a restarted
//! worker finds its tenants again.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TenantState {
    /// Its process tree is live.
    Running,
    /// Being dumped and committed; connections wait for the swap-in that follows.
    SwappingOut,
    /// Checkpointed into the store; nothing of it is in memory.
    SwappedOut,
    /// Being restored; connections wait for it.
    SwappingIn,
    /// Its process ended on its own (or was lost across a worker restart) and it has no checkpoint.
    Exited,
    /// Its restore failed `max_restore_failures` times in a row: it is not woken any more until
    /// an operator swaps it in by hand (`failure` says why). Its checkpoints are kept.
    Failed,
}

impl std::fmt::Display for TenantState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TenantState::Running => "running",
            TenantState::SwappingOut => "swapping-out",
            TenantState::SwappedOut => "swapped-out",
            TenantState::SwappingIn => "swapping-in",
            TenantState::Exited => "exited",
            TenantState::Failed => "failed",
        })
    }
}

/// One tenant, as `pico tenant ls --json` shows it and as it is saved in `tenant.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TenantInfo {
    pub name: String,
    pub state: TenantState,
    pub pid: Option<u32>,
    pub port: u16,
    pub cmd: Vec<String>,
    /// Started with ASLR off and fixed hash seeds (see [`crate::launch::DETERMINISTIC_ENV`]).
    #[serde(default)]
    pub deterministic: bool,
    /// Environment variables it was started with beyond the worker's.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub env: std::collections::BTreeMap<String, String>,
    /// Its working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<std::path::PathBuf>,
    /// Runs in a view of its own with few capabilities and a seccomp filter (see `sandbox`).
    #[serde(default)]
    pub sandbox: bool,
    /// Host paths its sandbox shows read-only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read_only: Vec<PathBuf>,
    /// Runs as root of a user namespace of its own, whose ids `0..` are the host's ids from
    /// this one on (see `userns`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_namespace: Option<u32>,
    /// Newest committed checkpoint.
    pub checkpoint: Option<String>,
    pub generation: Option<u64>,
    pub last_swap_out: Option<SwapOutReport>,
    pub last_swap_in: Option<SwapInReport>,
    /// What the last swap-in's background fill read (the lazy part of the image), by tier.
    #[serde(default)]
    pub last_fill: Option<pagestore::prefetch::PrefetchReport>,
    /// Bytes each tier served to the last lazy restore, for the restore's own reads, the faults
    /// of the learning window and the background copy (once the restore has finished copying).
    #[serde(default)]
    pub last_reads: Option<pager::reads::MountReadReport>,
    /// What the last lazy restore's fill of the rest of the image waited for (the first
    /// answer, or the learning window's close), and the cold reads until then.
    #[serde(default)]
    pub last_fill_wait: Option<FillWait>,
    /// Swapped out on its own after this long without an open connection carrying a byte
    /// (0: never).
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// When a byte last crossed one of its connections, or it last started or woke (Unix ms).
    #[serde(default)]
    pub last_active: Option<u64>,
    /// The kernel forwards its port now (it runs, and the worker admitted it: see
    /// `kernel_forward`); else the worker relays its connections. Filled in by `status`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kernel_forwarded: bool,
    /// Tries to make its link that failed in a row: the worker relays its connections meanwhile
    /// and tries again later (see `kernel_forward`). Filled in by `status`.
    #[serde(default)]
    pub link_failures: u32,
    /// Its memory limit and CPU weight (see `cgroup`).
    #[serde(default, flatten)]
    pub limits: crate::cgroup::Limits,
    /// Bytes its working directory may hold: a filesystem of its own of this size (see
    /// `disk_quota`); none: the host's disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_quota: Option<u64>,
    /// Each connection forwarded to it starts with a PROXY protocol v2 header naming the
    /// client (see `proxy_header`).
    #[serde(default)]
    pub proxy_protocol: bool,
    /// The address it sees its clients at. A record written before tenants had the choice says
    /// nothing: its link was made to show them at the loopback.
    #[serde(default = "ClientAddress::of_older_records")]
    pub client_address: ClientAddress,
    /// Checkpointed this often while it runs and is busy (0: only when it sleeps).
    #[serde(default)]
    pub checkpoint_every_ms: u64,
    /// Its memory in use: anonymous and shared memory of its cgroup (`cgroup`) while it runs,
    /// at its last swap-out while it sleeps; without cgroups, the resident set of its process
    /// tree at its last swap-out. Bytes.
    #[serde(default)]
    pub rss_bytes: Option<u64>,
    /// Restores that failed since its last good one.
    #[serde(default)]
    pub restore_failures: u32,
    /// Why it is `failed`, or why its last restore failed.
    #[serde(default)]
    pub failure: Option<String>,
    /// The directory its current swap-out dumps into (set before the dump starts, cleared once
    /// the checkpoint is committed): a restarted worker commits a complete dump found there.
    #[serde(default)]
    pub staging: Option<PathBuf>,
    /// A lazy restore is still copying its pages in through this worker: a worker that stops
    /// meanwhile leaves the tenant's memory incomplete, so its successor restores it again.
    #[serde(default)]
    pub pages_pending: bool,
}

/// What `pico tenant add` asks for: a new tenant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantSpec {
    pub name: String,
    /// Its public port, and the port it listens on inside its network namespace.
    pub port: u16,
    pub cmd: Vec<String>,
    /// Launch with a deterministic address layout (see `launch`).
    #[serde(default)]
    pub deterministic: bool,
    /// Swapped out on its own after this long idle (default [`DEFAULT_IDLE_TIMEOUT_MS`]; 0:
    /// never).
    #[serde(default)]
    pub idle_timeout_ms: Option<u64>,
    /// Environment variables added to the worker's for its command.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub env: std::collections::BTreeMap<String, String>,
    /// Its working directory (absolute; it must exist, and be writable: CRIU mounts a `/proc`
    /// there during a dump); default `tenants/NAME/cwd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<std::path::PathBuf>,
    /// Run it in a sandbox (the default): a mount view of its own (the system directories and
    /// `read_only` read-only, its working directory writable, nothing else of the host), few
    /// capabilities, no new privileges and a seccomp filter (see `sandbox` and `confine`).
    #[serde(default = "sandboxed_by_default")]
    pub sandbox: bool,
    /// Absolute host paths its sandbox shows read-only, at the same path, beyond those its
    /// command names (see [`crate::sandbox::shown_read_only`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read_only: Vec<PathBuf>,
    /// Run it as root of a user namespace of its own (off by default; needs the sandbox): uid 0
    /// inside is an unprivileged uid of the host, its working directory is given to it (see
    /// `userns`).
    #[serde(default)]
    pub user_namespace: bool,
    /// Its memory limit and CPU weight (see `cgroup`).
    #[serde(default, flatten)]
    pub limits: crate::cgroup::Limits,
    /// Bytes its working directory may hold (see `disk_quota`; at least 8 MiB, and only in the
    /// tenant's own directory, not with `workdir`); none: the host's disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_quota: Option<u64>,
    /// Start each connection forwarded to it with a PROXY protocol v2 header naming the client
    /// (off by default: a tenant that does not expect one would take it for its request).
    #[serde(default)]
    pub proxy_protocol: bool,
    /// The address it sees its clients at (default: its link's).
    #[serde(default)]
    pub client_address: ClientAddress,
    /// Checkpoint it this often while it runs and is busy, leaving it running (see
    /// `checkpoint`); none: only when it sleeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_every_ms: Option<u64>,
}

impl TenantSpec {
    /// A tenant running `cmd` on `port` with every option off or empty (no sandbox, the default
    /// layout, the worker's idle timeout, no limits); callers set what they need on top.
    pub fn new(name: &str, port: u16, cmd: Vec<String>) -> TenantSpec {
        TenantSpec {
            name: name.to_string(),
            port,
            cmd,
            deterministic: false,
            idle_timeout_ms: None,
            env: Default::default(),
            workdir: None,
            sandbox: false,
            read_only: Vec::new(),
            limits: Default::default(),
            disk_quota: None,
            proxy_protocol: false,
            client_address: ClientAddress::Link,
            user_namespace: false,
            checkpoint_every_ms: None,
        }
    }
}

/// The address a tenant sees its clients at (without the PROXY protocol, which names the client
/// itself). Either way every client reaches it through the worker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAddress {
    /// Its link's (see `kernel_forward`): the host's end for the connections the kernel
    /// forwards, its own end for those the worker relays (while it wakes). No client passes
    /// for a local one. Without a link (kernel forwarding off, the PROXY protocol, a link not
    /// made yet) the relay's connections come from the loopback.
    #[default]
    Link,
    /// 127.0.0.1, for every client: for programs that serve local clients only (redis's
    /// protected mode). Every client then has a local client's trust, and the tenant's
    /// namespace rewrites both addresses of each forwarded packet and routes each answer again
    /// (a large transfer 0-4% slower: bench/results/forward).
    Loopback,
}

impl ClientAddress {
    fn of_older_records() -> ClientAddress {
        ClientAddress::Loopback
    }
}

impl std::str::FromStr for ClientAddress {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<ClientAddress, String> {
        match text {
            "link" => Ok(ClientAddress::Link),
            "loopback" => Ok(ClientAddress::Loopback),
            _ => Err(format!("{text:?} is not \"link\" or \"loopback\"")),
        }
    }
}

fn sandboxed_by_default() -> bool {
    true
}

/// A tenant's idle timeout unless its spec says otherwise.
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 60_000;

fn default_idle_timeout_ms() -> u64 {
    DEFAULT_IDLE_TIMEOUT_MS
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SwapOutReport {
    pub checkpoint: String,
    pub generation: u64,
    pub dump_ms: u64,
    pub ingest_ms: u64,
    pub total_ms: u64,
    pub pages_total: u64,
    pub pages_zero: u64,
    pub pages_new: u64,
    pub bytes_uploaded: u64,
    /// Pages also written to the checkpoint's locality pack, and its bytes (copies of pages
    /// stored in other packs too; included in `bytes_uploaded`).
    #[serde(default)]
    pub locality_pages: u64,
    #[serde(default)]
    pub locality_bytes: u64,
    /// Of `locality_pages`, those the tenant wrote since its previous checkpoint
    /// (`locality_written_pages`).
    #[serde(default)]
    pub locality_written_pages: u64,
    /// The tenant's memory in use just before the dump, what the swap-out freed (see
    /// [`TenantInfo::rss_bytes`]).
    #[serde(default)]
    pub rss_bytes: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SwapInReport {
    pub checkpoint: String,
    pub pid: u32,
    /// Pages the ActiveSet had CRIU install eagerly (0 without one).
    #[serde(default)]
    pub eager_pages: u64,
    /// Pages of the ActiveSet prefetched into memory instead, left to fault
    /// (`activeset_install = "prefetch"`).
    #[serde(default)]
    pub prefetched_pages: u64,
    /// Restored whole (plain `criu restore`, no lazy pages): a small checkpoint held on this
    /// worker.
    #[serde(default)]
    pub whole: bool,
    /// The prefetch of the pages `criu restore` reads before the tenant runs; for a whole
    /// restore, of the pages this worker lacked.
    #[serde(default)]
    pub prefetch: pagestore::prefetch::PrefetchReport,
    /// Until the image directory was ready: the checkpoint mounted (lazy), or written out to
    /// its tmpfs (whole).
    pub mount_ms: u64,
    pub restore_ms: u64,
    pub total_ms: u64,
}

/// What the rest of the image waited for before its fill went on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FillReleasedBy {
    /// Nothing: no ActiveSet was installed (or the restore did not learn), so the fill went on
    /// once the restore set was fetched.
    Nothing,
    /// The tenant's first answer to a client.
    Answer,
    /// The learning window's close (no client waited, or none got an answer before).
    Window,
    /// Faults the installed set did not foresee, fetched one by one from the cold tier.
    Misses,
}

/// The cold tier's reads from the start of a lazy swap-in until the fill of the rest of its image
/// went on: when that waited for the first answer, what the answer cost. Read from the store's
/// counters, so a read of another tenant meanwhile counts too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FillWait {
    pub released_by: FillReleasedBy,
    pub ms: u64,
    pub cold_bytes: u64,
    /// Sequential cold round trips (`pagestore::cold::ReadWaves`).
    pub cold_waves: u64,
}

/// Milliseconds since `since`, as the swap reports count them.
pub(crate) fn elapsed_ms(since: std::time::Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

/// Makes `path` an empty directory (deleting what it held): a CRIU run's image or work
/// directory.
pub(crate) fn fresh_dir(path: &Path) -> Result<()> {
    if path.exists() {
        std::fs::remove_dir_all(path).map_err(|e| Error::io(path, e))?;
    }
    std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))
}

/// Where a tenant's files live.
#[derive(Clone, Debug)]
pub struct TenantDirs {
    pub root: PathBuf,
}

impl TenantDirs {
    pub fn new(tenants_dir: &Path, name: &str) -> Self {
        TenantDirs {
            root: tenants_dir.join(name),
        }
    }
    /// The tenant's working directory.
    pub fn cwd(&self) -> PathBuf {
        self.root.join("cwd")
    }
    /// Its stdout and stderr.
    pub fn log(&self) -> PathBuf {
        self.root.join("tenant.log")
    }
    /// The skeleton that is its root in its sandbox, and the sandbox's `/tmp` and `/dev/shm`.
    pub fn view_root(&self) -> PathBuf {
        self.root.join("view")
    }
    pub fn view_tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }
    pub fn view_shm(&self) -> PathBuf {
        self.root.join("shm")
    }
    /// An empty directory and an empty file mounted over the worker's paths in its view.
    pub fn mask_dir(&self) -> PathBuf {
        self.root.join("mask")
    }
    pub fn mask_file(&self) -> PathBuf {
        self.root.join("mask-file")
    }
    /// The view of a sandboxed tenant of these directories working in `workdir`.
    pub fn view(
        &self,
        workdir: &Path,
        read_only: &[PathBuf],
        secrets: &[PathBuf],
    ) -> crate::sandbox::View {
        crate::sandbox::View::new(&crate::sandbox::ViewSources {
            root: &self.view_root(),
            tmp: &self.view_tmp(),
            shm: &self.view_shm(),
            log: &self.log(),
            workdir,
            read_only,
            secrets,
            mask_dir: &self.mask_dir(),
            mask_file: &self.mask_file(),
        })
    }
    /// Where its network namespace is pinned (see `netns`).
    pub fn netns(&self) -> PathBuf {
        self.root.join("netns")
    }
    pub fn state_file(&self) -> PathBuf {
        self.root.join("tenant.json")
    }
    /// The worker's copy of its ActiveSet (`activeset`).
    pub fn activeset_file(&self) -> PathBuf {
        self.root.join("activeset.json")
    }
    /// The access log of the lazy restore of checkpoint generation `generation`: every page
    /// read through the mount, one JSON record per line (`pager::access::write_jsonl`).
    pub fn access_log(&self, generation: u64) -> PathBuf {
        self.root.join(format!("access-{generation}.jsonl"))
    }
    /// CRIU's work directory for one operation (logs, sockets, stats).
    pub fn criu_work(&self, op: &str) -> PathBuf {
        self.root.join("criu").join(op)
    }
}

impl TenantInfo {
    /// The record of the tenant of `spec` just started as `pid`, its sandbox showing
    /// `read_only`.
    /// `read_only`, as root of a user namespace mapping host ids from `user_namespace` when
    /// given.
    pub fn started(
        spec: TenantSpec,
        pid: u32,
        read_only: Vec<PathBuf>,
        user_namespace: Option<u32>,
    ) -> TenantInfo {
        TenantInfo {
            name: spec.name,
            state: TenantState::Running,
            pid: Some(pid),
            port: spec.port,
            cmd: spec.cmd,
            deterministic: spec.deterministic,
            env: spec.env,
            workdir: spec.workdir,
            sandbox: spec.sandbox,
            read_only,
            user_namespace,
            checkpoint: None,
            generation: None,
            last_swap_out: None,
            last_swap_in: None,
            last_fill: None,
            last_reads: None,
            last_fill_wait: None,
            idle_timeout_ms: spec.idle_timeout_ms.unwrap_or(DEFAULT_IDLE_TIMEOUT_MS),
            last_active: Some(pagestore::clock::now_ms()),
            kernel_forwarded: false,
            link_failures: 0,
            rss_bytes: None,
            limits: spec.limits,
            disk_quota: spec.disk_quota,
            proxy_protocol: spec.proxy_protocol,
            client_address: spec.client_address,
            checkpoint_every_ms: spec.checkpoint_every_ms.unwrap_or(0),
            restore_failures: 0,
            failure: None,
            staging: None,
            pages_pending: false,
        }
    }

    /// Its working directory, as started.
    pub fn cwd(&self, dirs: &TenantDirs) -> PathBuf {
        self.workdir.clone().unwrap_or_else(|| dirs.cwd())
    }

    /// Its sandbox's view, if it runs in one.
    pub fn view(&self, dirs: &TenantDirs, secrets: &[PathBuf]) -> Option<crate::sandbox::View> {
        self.sandbox
            .then(|| dirs.view(&self.cwd(dirs), &self.read_only, secrets))
    }

    /// The record as it is saved at `path`: JSON with its format version ([`RECORD_FORMAT`]).
    pub fn to_record(&self, path: &Path) -> Result<Vec<u8>> {
        let versioned = pagestore::format::Versioned {
            format: RECORD_FORMAT,
            record: self,
        };
        serde_json::to_vec_pretty(&versioned).map_err(|source| Error::TenantRecordUnencodable {
            path: path.to_path_buf(),
            source,
        })
    }

    /// A record saved at `path` (`bytes`): of any format up to [`RECORD_FORMAT`] (one without
    /// a format is 1); a newer one is refused (`pagestore::Error::UnsupportedVersion`), never
    /// read as an older one.
    pub fn from_record(path: &Path, bytes: &[u8]) -> Result<TenantInfo> {
        let bad = |source| Error::BadTenantRecord {
            path: path.to_path_buf(),
            source,
        };
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(bad)?;
        let object = path.display().to_string();
        pagestore::format::json_format("tenant record", &object, &value, RECORD_FORMAT)?;
        serde_json::from_value(value).map_err(bad)
    }

    pub fn save(&self, dirs: &TenantDirs) -> Result<()> {
        let path = dirs.state_file();
        let tmp = path.with_extension("json.tmp");
        let text = self.to_record(&path)?;
        // Durable before it replaces the old record: a restarted worker trusts what it reads.
        let mut file = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        std::io::Write::write_all(&mut file, &text).map_err(|e| Error::io(&tmp, e))?;
        file.sync_all().map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        if let Ok(dir) = std::fs::File::open(&dirs.root) {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    pub fn load(path: &Path) -> Result<TenantInfo> {
        let text = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        TenantInfo::from_record(path, &text)
    }
}

/// The format of a tenant record (`tenant.json`, and `pico-tenant.json` in a checkpoint): the
/// version this build writes and the newest it reads. Fields added with a default need no new
/// version (older records read as before); one an older reader would misread does.
pub const RECORD_FORMAT: u32 = 1;

/// The worker's registry: every tenant saved under `tenants_dir`, in name order. A directory
/// without a readable `tenant.json` is skipped (logged); a record of a newer format than this
/// build reads is an error, so that no worker runs beside tenants it cannot see.
pub fn load_registry(tenants_dir: &Path) -> Result<Vec<(TenantDirs, TenantInfo)>> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(tenants_dir).map_err(|e| Error::io(tenants_dir, e))?;
    // Each tenant is a directory; a file beside them is the worker's (`cgroup::GROUP_FILE`).
    for entry in entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
    {
        let dirs = TenantDirs { root: entry.path() };
        match TenantInfo::load(&dirs.state_file()) {
            Ok(info) => out.push((dirs, info)),
            Err(e @ Error::Store(pagestore::Error::UnsupportedVersion { .. })) => return Err(e),
            Err(e) => {
                tracing::warn!(dir = %dirs.root.display(), error = %e, "no readable tenant record: skipped");
            }
        }
    }
    out.sort_by(|a, b| a.1.name.cmp(&b.1.name));
    Ok(out)
}

/// What `pico tenant activeset` shows.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ActiveSetSummary {
    pub tenant: String,
    pub restores: usize,
    pub pages: usize,
    pub bytes: u64,
    pub last: Option<LastRestore>,
    pub list: Vec<pager::activeset::ActivePage>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LastRestore {
    pub checkpoint: String,
    pub generation: u64,
    pub eager_pages: u64,
    pub faults: u64,
    pub hit_rate: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str) -> TenantInfo {
        TenantInfo::started(
            TenantSpec::new(name, 8080, vec!["app".into()]),
            1,
            vec![],
            None,
        )
    }

    #[test]
    fn the_registry_reads_old_and_current_records_skips_junk_and_refuses_newer_ones() {
        let dir = tempfile::tempdir().unwrap();
        let save = |name: &str, bytes: &[u8]| {
            let dirs = TenantDirs::new(dir.path(), name);
            std::fs::create_dir_all(&dirs.root).unwrap();
            std::fs::write(dirs.state_file(), bytes).unwrap();
        };
        // Saved before records carried a format.
        save("old", &serde_json::to_vec_pretty(&record("old")).unwrap());
        let new_dirs = TenantDirs::new(dir.path(), "new");
        std::fs::create_dir_all(&new_dirs.root).unwrap();
        record("new").save(&new_dirs).unwrap();
        save("junk", b"{not json");
        let names: Vec<String> = load_registry(dir.path())
            .unwrap()
            .into_iter()
            .map(|(_, info)| info.name)
            .collect();
        assert_eq!(names, ["new", "old"]);

        let newer = String::from_utf8(record("newer").to_record(Path::new("x")).unwrap())
            .unwrap()
            .replacen("\"format\": 1", "\"format\": 7", 1);
        save("newer", newer.as_bytes());
        let err = load_registry(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("newer/tenant.json")
                && err.contains("version 7")
                && err.contains("1 to 1"),
            "{err}"
        );
    }
}
