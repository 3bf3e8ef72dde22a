//! Where the API listens: the worker's unix socket, always, and TCP with `api_listen`; and
//! serving both until the worker stops.
//!
//! The socket is a file that outlives a killed worker: it is taken over when no worker answers
//! on it, refused when one does. It is made 0600, so only root reaches the API there. TCP is
//! bound only with a token (`api_token_file`), which every request there must carry.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::api::auth::{require_token, ApiToken};
use crate::api::router;
use crate::config::WorkerConfig;
use crate::error::{Error, Result};
use crate::host::Worker;

/// The bound listeners of a worker's API.
pub(crate) struct Listeners {
    unix: UnixListener,
    tcp: Option<(TcpListener, ApiToken)>,
}

impl Listeners {
    /// Binds the unix socket and, with `api_listen`, the TCP address, whose requests must carry
    /// `token` (see [`api_token`]).
    pub(crate) async fn bind(config: &WorkerConfig, token: Option<ApiToken>) -> Result<Listeners> {
        let unix = bind_socket(&config.socket).await?;
        let tcp = match (config.api_listen, token) {
            (Some(addr), Some(token)) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|source| Error::ApiListen { addr, source })?;
                Some((listener, token))
            }
            _ => None,
        };
        Ok(Listeners { unix, tcp })
    }

    /// The TCP address bound, if any (the port the system chose for `:0`).
    pub(crate) fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }
}

/// The token TCP requests must carry: `None` without `api_listen`; with it, `$PICO_TOKEN` or
/// the token in `api_token_file`, which must then be set, readable and not empty. A worker
/// checks this first.
pub(crate) fn api_token(config: &WorkerConfig) -> Result<Option<ApiToken>> {
    let Some(listen) = config.api_listen else {
        return Ok(None);
    };
    match ApiToken::cluster(config.api_token_file.as_deref()) {
        Err(Error::TokenMissing) => Err(Error::ApiTokenMissing { listen }),
        token => token.map(Some),
    }
}

/// Binds the socket at `path` (mode 0600), taking over a socket file no worker listens on any
/// more. It is bound and made 0600 under a name of its own first and renamed into place: the
/// file appears already listening, so a client that waits for it to exist is not refused (a
/// socket file bound but not yet listening refuses connections), and never with wider modes.
async fn bind_socket(path: &Path) -> Result<UnixListener> {
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(Error::WorkerAlreadyRunning {
                socket: path.to_path_buf(),
            });
        }
        std::fs::remove_file(path).map_err(|e| Error::io(path, e))?;
    }
    // Short, so that it fits a socket address wherever `path` does (one worker per home, which
    // holds the home's lock; the process id keeps homes sharing a directory apart).
    let new = path.with_file_name(format!(".{}", std::process::id()));
    let _ = std::fs::remove_file(&new);
    let listener = UnixListener::bind(&new).map_err(|e| Error::io(&new, e))?;
    use std::os::unix::fs::PermissionsExt;
    let placed = std::fs::set_permissions(&new, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&new, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&new);
        return Err(Error::io(path, e));
    }
    Ok(listener)
}

/// `router` behind the bearer token.
pub(super) fn with_token(router: Router, token: ApiToken) -> Router {
    router.layer(axum::middleware::from_fn_with_state(token, require_token))
}

/// Serves the API on `listeners` until `stop` completes, then lets the requests under way
/// finish (a swap is never cut off).
pub(crate) async fn serve(listeners: Listeners, worker: Arc<Worker>, stop: impl Future) {
    let (stopping, stopped) = watch::channel(false);
    let until_stopped = |mut stopped: watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|&s| s).await;
    };
    let mut servers = Vec::new();
    let unix = axum::serve(listeners.unix, router(worker.clone()))
        .with_graceful_shutdown(until_stopped(stopped.clone()));
    servers.push(tokio::spawn(async move { ("unix socket", unix.await) }));
    if let Some((listener, token)) = listeners.tcp {
        if let Ok(addr) = listener.local_addr() {
            info!(%addr, "API on TCP (bearer token)");
        }
        let tcp = axum::serve(listener, with_token(router(worker), token))
            .with_graceful_shutdown(until_stopped(stopped));
        servers.push(tokio::spawn(async move { ("TCP", tcp.await) }));
    }
    stop.await;
    let _ = stopping.send(true);
    for server in servers {
        match server.await {
            Ok((_, Ok(()))) => {}
            Ok((on, Err(e))) => warn!(on, error = %e, "API server failed"),
            Err(e) => warn!(error = %e, "API server task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[tokio::test]
    async fn the_socket_appears_listening_root_only_and_is_not_taken_from_a_live_worker() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("worker.sock");
        std::fs::write(&path, b"left by a killed worker").unwrap();
        let listener = bind_socket(&path).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // The only file there: nothing of the name it was bound under is left.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["worker.sock"]);
        let (_client, accepted) = tokio::join!(UnixStream::connect(&path), listener.accept());
        accepted.unwrap();
        assert!(matches!(
            bind_socket(&path).await,
            Err(Error::WorkerAlreadyRunning { .. })
        ));
    }
}
