//! The one error type of the worker. Each variant reads as what went wrong and what to do.

use std::net::SocketAddr;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the worker must run as root (CRIU needs CAP_SYS_ADMIN and FUSE mounts need root)")]
    NotRoot,

    /// Says how to install it ([`crate::criu::INSTALL`]).
    #[error(
        "CRIU not found as {bin:?}: CRIU >= {needed} is required. {}",
        crate::criu::INSTALL
    )]
    CriuMissing { bin: PathBuf, needed: &'static str },

    /// Says how to install it ([`crate::criu::INSTALL`]).
    #[error("CRIU {found} found at {bin:?}, but >= {needed} is required (older versions fail on this kernel). {}", crate::criu::INSTALL)]
    CriuTooOld {
        bin: PathBuf,
        found: String,
        needed: &'static str,
    },

    #[error("criu {op} failed ({status}); last lines of {log}:\n{tail}")]
    Criu {
        op: &'static str,
        status: String,
        log: PathBuf,
        tail: String,
    },

    #[error(
        "criu {op} on worker {worker}: {file} is not the file the tenant had open when it was \
         dumped ({why}); system files (interpreters, libraries) must be the same on every worker \
         (CRIU's log: {log})"
    )]
    SystemFileChanged {
        op: &'static str,
        worker: String,
        file: String,
        why: String,
        log: PathBuf,
    },

    /// The dump's post-dump check (`dump_check`) found descriptors no restore could open; CRIU
    /// resumed the tree.
    #[error(
        "criu dump refused: the tenant holds open a file of the host's /proc that no restore \
         could open (its pids change; a tenant without a sandbox sees the host's /proc): {}; it \
         keeps running (CRIU's log: {log})",
        held.join(", ")
    )]
    DumpRefused { held: Vec<String>, log: PathBuf },

    #[error("TLS: {0}")]
    Tls(String),

    #[error("no tenant named {0:?} (see `pico tenant ls`)")]
    UnknownTenant(String),

    #[error("a tenant named {0:?} already exists")]
    TenantExists(String),

    #[error(
        "port {port} is already in use by tenant {tenant:?} (a swapped-out tenant keeps its port \
         for its restore; `pico tenant rm {tenant}` frees it)"
    )]
    PortHeld { port: u16, tenant: String },

    #[error("tenant {name} is already swapped out (checkpoint {checkpoint})")]
    AlreadySwappedOut { name: String, checkpoint: String },

    #[error("tenant {name} is {state}, not swapped out")]
    NotSwappedOut { name: String, state: String },

    #[error("tenant {name} is not running (it is {state})")]
    NotRunning { name: String, state: String },

    #[error("tenant {name} did not listen on port {port} within {waited_ms} ms; see {log}")]
    StartTimeout {
        name: String,
        port: u16,
        waited_ms: u64,
        log: PathBuf,
    },

    #[error("cannot start tenant {name}: {reason}")]
    Start { name: String, reason: String },

    #[error(
        "tenant {0} runs in a user namespace, which CRIU restores lazily only with \
         vm.unprivileged_userfaultfd = 1, and its image could not be written out whole (a page \
         is in neither the memory nor the local tier after fetching it)"
    )]
    WholeImageIncomplete(String),

    #[error("swap-out of {name} could not commit its checkpoint ({cause}); {outcome}")]
    SwapOutNotCommitted {
        name: String,
        cause: String,
        outcome: String,
    },

    #[error("checkpoint of running tenant {name} could not be committed ({cause}); it keeps running, its last checkpoint stands")]
    CheckpointNotCommitted { name: String, cause: String },

    #[error("bad request: tenant name {0:?} must be 1-63 letters, digits, '.', '_' or '-'")]
    InvalidTenantName(String),

    #[error("bad request: tenant {tenant}: {reason}")]
    BadLimits { tenant: String, reason: String },

    #[error("cannot give tenant {tenant} its cgroup (memory limit, CPU weight): {source}")]
    Cgroup {
        tenant: String,
        #[source]
        source: std::io::Error,
    },

    #[error("bad request: {0}")]
    BadRequest(String),

    #[error("tenant {tenant}'s disk quota: {what} failed: {reason} (needs mkfs.ext4 from e2fsprogs, mount and loop devices: deploy/setup.sh)")]
    DiskQuota {
        tenant: String,
        what: String,
        reason: String,
    },

    #[error("this machine's CPU cannot run what was dumped on the other's: {0}")]
    CpuMismatch(String),

    #[error("bad request: no command given for tenant {0:?}")]
    NoCommand(String),

    #[error("no worker is listening on {socket}: start one with `pico worker run` ({source})")]
    WorkerNotRunning {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("another worker is already listening on {socket}")]
    WorkerAlreadyRunning { socket: PathBuf },

    #[error("the worker could not encode its answer: {0}")]
    AnswerUnencodable(#[source] serde_json::Error),

    #[error("could not encode the request to the worker: {0}")]
    RequestUnencodable(#[source] serde_json::Error),

    #[error(
        "no worker answers on {addr}: is `api_listen` set on it, and the address right? ({source})"
    )]
    WorkerUnreachable {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "could not build the HTTP request to the worker (is the token one line of text?): {0}"
    )]
    RequestUnbuildable(#[source] axum::http::Error),

    /// `peer`: "the worker on ADDR", "the hub on ADDR".
    #[error("the HTTP exchange with {peer} failed: {source}")]
    Http {
        peer: String,
        #[source]
        source: hyper::Error,
    },

    #[error("{peer} answered something that is not JSON: {source}")]
    BadAnswer {
        peer: String,
        #[source]
        source: serde_json::Error,
    },

    #[error("the API has no route for the {op:?} request (add one to worker/src/api/routes.rs)")]
    NoRoute { op: String },

    #[error(
        "api_listen = \"{listen}\" needs api_token_file (or PICO_TOKEN): on TCP every request must \
         carry the bearer token that file holds (write one, readable by root only, and name it \
         under [worker])"
    )]
    ApiTokenMissing { listen: SocketAddr },

    #[error("no token: set PICO_TOKEN, or name a token file in pico.toml")]
    TokenMissing,

    #[error("the API token file {path} is empty: write the bearer token into it")]
    ApiTokenEmpty { path: PathBuf },

    #[error("cannot serve the API on {addr} (api_listen): {source}")]
    ApiListen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },

    /// A request the worker carried out and that failed there; its message.
    #[error("worker: {0}")]
    Remote(String),

    #[error("nothing answers on {addr} ({what}): {source}")]
    PeerUnreachable {
        addr: SocketAddr,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "[worker.hub] needs api_listen (and api_token_file): the hub wakes this worker's tenants \
         through its TCP API"
    )]
    HubNeedsApi,

    #[error(
        "[worker.hub] needs public_addr: listen_addr is unspecified, so the hub would not know \
         which address to give clients"
    )]
    HubNeedsPublicAddr,

    #[error(
        "this worker's lease from the hub ran out: no swap until the hub answers again (it may \
         have placed its tenants on another worker)"
    )]
    NoLease,

    #[error("this machine has no host name: set [worker.hub] name")]
    HubNeedsName,

    /// A request another API of the worker's kind (the hub's) failed; its message.
    #[error("{peer}: {message}")]
    RemotePeer { peer: String, message: String },

    #[error("tenant {name} cannot be taken over from checkpoint {checkpoint}: {why}")]
    NotAdoptable {
        name: String,
        checkpoint: String,
        why: String,
    },

    #[error("the tenant files stored with a checkpoint are not valid: {0}")]
    BadFilesArchive(String),

    #[error("tenant record {path} is not valid (fix or remove it): {source}")]
    BadTenantRecord {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error("could not encode the tenant record {path}: {source}")]
    TenantRecordUnencodable {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error("the stored ActiveSet of tenant {tenant} is not valid: {source}")]
    BadActiveSet {
        tenant: String,
        #[source]
        source: serde_json::Error,
    },

    #[error("could not encode the ActiveSet of tenant {tenant}: {source}")]
    ActiveSetUnencodable {
        tenant: String,
        #[source]
        source: serde_json::Error,
    },

    #[error("port {port}: the kernel's forwarding to its tenant could not be {what}: {reason}")]
    KernelForward {
        port: u16,
        what: &'static str,
        reason: String,
    },

    #[error("criu wrote a bad pid file {path}: {text:?}")]
    BadPidFile { path: PathBuf, text: String },

    #[error("the {task} task failed: {source}")]
    TaskFailed {
        task: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },

    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(transparent)]
    Store(#[from] pagestore::Error),

    #[error(transparent)]
    Pager(#[from] pager::Error),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
