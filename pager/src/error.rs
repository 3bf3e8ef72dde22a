//! The one error type of the pager.

use std::net::SocketAddr;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot mount FUSE at {path}: {source} (is /dev/fuse present, and are we root?)")]
    Mount {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot unmount {path}: {source}")]
    Unmount {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] pagestore::Error),
    #[error(
        "refusing to serve NBD on {0}: it is not a loopback address, and this server has no TLS \
         (anyone who can connect could read the memory images); listen on 127.0.0.1 or ::1 and \
         tunnel (e.g. ssh -L) to reach it from elsewhere"
    )]
    NbdNotLoopback(SocketAddr),
    #[error("cannot listen for NBD on {addr}: {source}")]
    NbdBind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("checkpoint {checkpoint} has no paged file to export{}", file.as_ref().map(|f| format!(" named {f:?}")).unwrap_or_default())]
    NothingToExport {
        checkpoint: String,
        file: Option<String>,
    },
    #[error("NBD protocol error: {0}")]
    NbdProtocol(String),
    #[error("export is read-only (start the server with --writable)")]
    ExportReadOnly,
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}
