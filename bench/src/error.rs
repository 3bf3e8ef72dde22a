//! The one error type of the benchmarks.

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
    #[error("cannot run {tool}: {reason} (install it: apt-get install {package})")]
    Tool {
        tool: &'static str,
        package: &'static str,
        reason: String,
    },
    #[error("benchmark client: {0}")]
    Client(String),
    #[error("{0} failed: {1}")]
    Step(String, String),
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
