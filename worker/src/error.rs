//! The one error type of the worker. Each variant reads as what went wrong and what to do.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the worker must run as root (CRIU needs CAP_SYS_ADMIN and FUSE mounts need root)")]
    NotRoot,

    #[error("CRIU not found as {bin:?}: CRIU >= {needed} is required; run deploy/setup.sh to build and install it")]
    CriuMissing { bin: PathBuf, needed: &'static str },

    #[error("CRIU {found} found at {bin:?}, but >= {needed} is required (older versions fail on this kernel); run deploy/setup.sh to build and install it")]
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

    #[error("swap-out of {name} could not commit its checkpoint ({cause}); {outcome}")]
    SwapOutNotCommitted {
        name: String,
        cause: String,
        outcome: String,
    },

    #[error("bad request: {0}")]
    BadRequest(String),

    #[error("no worker is listening on {socket}: start one with `pico worker run` ({source})")]
    WorkerNotRunning {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("worker protocol: {0}")]
    Protocol(String),

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
