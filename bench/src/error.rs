//! The one error type of the benchmarks. Each variant says what failed and what to do about it.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("`{tool}` could not be run ({source}); install it with deploy/setup.sh")]
    ToolMissing {
        tool: String,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot run {tool}: {reason} (install it: apt-get install {package})")]
    Tool {
        tool: &'static str,
        package: &'static str,
        reason: String,
    },

    #[error("`{command}` failed ({status}): {stderr}")]
    ToolFailed {
        command: String,
        status: String,
        stderr: String,
    },

    #[error("{0} failed: {1}")]
    Step(String, String),

    #[error("GET {url} failed: {source}")]
    HttpGet {
        url: String,
        #[source]
        source: std::io::Error,
    },

    #[error("GET {url}: not a 200 answer: {answer:?}")]
    BadHttpAnswer { url: String, answer: String },

    #[error("tenant {tenant}: {reason} (its log: {log})")]
    Tenant {
        tenant: String,
        reason: String,
        log: PathBuf,
    },

    #[error("checkpointing tenant {tenant}: {source}")]
    Criu {
        tenant: String,
        #[source]
        source: Box<worker::Error>,
    },

    #[error("benchmark client: {0}")]
    Client(String),

    #[error("page store: {0}")]
    Store(#[from] pagestore::Error),

    #[error(transparent)]
    Pager(#[from] pager::Error),

    #[error("bad benchmark options: {0}")]
    BadOptions(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
