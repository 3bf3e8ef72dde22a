//! The NBD front end: stored page files served as network block devices.
//!
//! Why our own protocol code: the `nbd` crate is synchronous, one request at a time, and lacks
//! NBD_OPT_GO, structured replies, block status and multi-conn, which qemu, nbdcopy and nbdinfo
//! all use. So the protocol lives here, on tokio, in small parts:
//!
//! - [`proto`]: wire constants and pure decoders (unit-tested and fuzzed);
//! - [`handshake`]: fixed newstyle option negotiation;
//! - [`transmission`]: one connection's requests, served concurrently with out-of-order replies;
//! - [`export`]: exports over the store (holes for zero pages, copy-on-write overlay), by name;
//! - [`cache`]: decoded pages shared by all connections.
//!
//! [`NbdServer`] accepts connections on a loopback address (TLS is not implemented, so anything
//! else is refused) and serves each in its own task: one bad client never stops the others.

pub mod cache;
pub mod export;
pub mod handshake;
pub mod proto;
pub mod transmission;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, info_span, warn, Instrument};

pub use export::{Export, ExportOptions, ExportSpec, ExportTable};

use crate::error::{Error, Result};

/// How long a client may take over the handshake before it is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Refuses listen addresses other than loopback: without TLS, NBD sends memory images in clear
/// and lets anyone who can connect read them.
pub fn check_listen_addr(addr: SocketAddr) -> Result<()> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(Error::NbdNotLoopback(addr))
    }
}

pub struct NbdServer {
    listener: TcpListener,
    exports: Arc<ExportTable>,
}

impl NbdServer {
    /// Binds `addr` (loopback only) to serve `exports`.
    pub async fn bind(addr: SocketAddr, exports: Arc<ExportTable>) -> Result<NbdServer> {
        check_listen_addr(addr)?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::NbdBind { addr, source })?;
        Ok(NbdServer { listener, exports })
    }

    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    pub fn exports(&self) -> &Arc<ExportTable> {
        &self.exports
    }

    /// Accepts and serves connections until the task is dropped.
    pub async fn run(self) -> Result<()> {
        info!(addr = %self.local_addr()?, exports = self.exports.len(), "NBD server listening");
        loop {
            let (stream, peer) = match self.listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving the others.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let exports = self.exports.clone();
            tokio::spawn(
                async move {
                    match connection(stream, &exports).await {
                        Ok(()) => debug!("connection closed"),
                        Err(e) => info!(error = %e, "connection dropped"),
                    }
                }
                .instrument(info_span!("nbd", %peer)),
            );
        }
    }
}

async fn connection(mut stream: TcpStream, exports: &ExportTable) -> Result<()> {
    stream.set_nodelay(true)?;
    let negotiated = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        handshake::negotiate(&mut stream, exports),
    )
    .await
    .map_err(|_| Error::NbdProtocol("handshake timed out".into()))??;
    let Some(negotiated) = negotiated else {
        return Ok(());
    };
    let export = exports
        .get(&negotiated.export.name)
        .cloned()
        .ok_or_else(|| Error::NbdProtocol("export vanished".into()))?;
    debug!(
        export = export.name(),
        structured = negotiated.structured,
        "transmission"
    );
    let (r, w) = stream.into_split();
    transmission::serve(r, w, export, negotiated).await
}
