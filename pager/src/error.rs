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
        "refusing to serve NBD on {0}: it is not a loopback address and TLS is not configured \
         (anyone who can connect could read the memory images); give --tls-cert and --tls-key, or \
         listen on 127.0.0.1 or ::1 and tunnel (e.g. ssh -L) to reach it from elsewhere"
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
    #[error("NBD TLS: {0}")]
    NbdTls(String),
    #[error("NBD protocol error: {0}")]
    NbdProtocol(String),
    #[error("export is read-only (start the server with --writable)")]
    ExportReadOnly,
    /// A socket of the NBD server failed: the listener's, or a client's connection (logged
    /// under a span that names the peer).
    #[error("NBD socket, {during}: {source}")]
    NbdSocket {
        during: &'static str,
        #[source]
        source: std::io::Error,
    },
}
