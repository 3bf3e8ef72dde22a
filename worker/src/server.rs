//! The control socket: a 0600 unix socket on which each line is one JSON request and each
//! answer one JSON line back ([`crate::protocol`]). Only the framing lives here; what a request
//! does is [`crate::dispatch`]'s.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::warn;

use crate::error::{Error, Result};
use crate::host::Worker;
use crate::protocol::{Request, Response};

/// Binds the control socket at `path` (mode 0600), taking over a socket file no worker listens
/// on any more.
pub(crate) async fn bind_socket(path: &Path) -> Result<UnixListener> {
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(Error::WorkerAlreadyRunning {
                socket: path.to_path_buf(),
            });
        }
        std::fs::remove_file(path).map_err(|e| Error::io(path, e))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| Error::io(path, e))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io(path, e))?;
    Ok(listener)
}

/// Accepts connections, each served on a task of its own, until `stop` completes.
pub(crate) async fn serve(listener: UnixListener, worker: Arc<Worker>, stop: impl Future) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let worker = worker.clone();
                    tokio::spawn(async move { serve_connection(worker, stream).await });
                }
                Err(e) => warn!(error = %e, "accept failed"),
            },
            _ = &mut stop => break,
        }
    }
}

/// Answers the requests of one connection, in order, until it closes.
async fn serve_connection(worker: Arc<Worker>, stream: UnixStream) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let response = match serde_json::from_str::<Request>(&line) {
            Ok(request) => match crate::dispatch::dispatch(&worker, request).await {
                Ok(result) => Response {
                    ok: true,
                    result: Some(result),
                    error: None,
                },
                Err(e) => Response {
                    ok: false,
                    result: None,
                    error: Some(e.to_string()),
                },
            },
            Err(e) => Response {
                ok: false,
                result: None,
                error: Some(format!("bad request: {e}")),
            },
        };
        let mut out = serde_json::to_vec(&response).unwrap_or_else(|_| b"{\"ok\":false}".to_vec());
        out.push(b'\n');
        if write.write_all(&out).await.is_err() {
            break;
        }
    }
}
