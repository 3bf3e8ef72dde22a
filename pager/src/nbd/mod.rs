//! The NBD front end: the paged files of stored checkpoints served as network block devices.
//!
//! Why our own protocol code: the `nbd` crate is synchronous, one request at a time, and lacks
//! NBD_OPT_GO, structured replies, block status and multi-conn, which qemu, nbdcopy and nbdinfo
//! all use. So the protocol lives here, on tokio, in small parts:
//!
//! - [`proto`]: wire constants and pure decoders (unit-tested and fuzzed);
//! - [`handshake`]: fixed newstyle option negotiation;
//! - [`transmission`]: one connection's requests, served concurrently with out-of-order replies;
//! - [`export`]: exports over the store (holes for zero pages, copy-on-write overlay), by name;
//!   decoded pages are kept in the store's memory tier, shared by all connections;
//! - [`tls`]: STARTTLS with rustls.
//!
//! [`NbdServer`] accepts connections (plaintext on loopback only; anywhere with TLS, which it then
//! requires) and serves each in its own task: one bad client never stops the others.

pub mod export;
pub mod handshake;
pub mod proto;
pub mod tls;
pub mod transmission;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, info_span, warn, Instrument};

pub use export::{Export, ExportOptions, ExportSpec, ExportTable};
use handshake::{Negotiated, Outcome, TlsMode};

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
    tls: Option<TlsAcceptor>,
}

impl NbdServer {
    /// Binds `addr` (loopback only) to serve `exports`.
    pub async fn bind(addr: SocketAddr, exports: Arc<ExportTable>) -> Result<NbdServer> {
        check_listen_addr(addr)?;
        Self::listen(addr, exports, None).await
    }

    /// Binds `addr` (any address) to serve `exports` to clients that start TLS first.
    pub async fn bind_tls(
        addr: SocketAddr,
        exports: Arc<ExportTable>,
        tls: TlsAcceptor,
    ) -> Result<NbdServer> {
        Self::listen(addr, exports, Some(tls)).await
    }

    async fn listen(
        addr: SocketAddr,
        exports: Arc<ExportTable>,
        tls: Option<TlsAcceptor>,
    ) -> Result<NbdServer> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::NbdBind { addr, source })?;
        Ok(NbdServer {
            listener,
            exports,
            tls,
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener
            .local_addr()
            .map_err(|source| Error::NbdSocket {
                during: "reading the listening address",
                source,
            })
    }

    pub fn exports(&self) -> &Arc<ExportTable> {
        &self.exports
    }

    /// Accepts and serves connections until the task is dropped.
    pub async fn run(self) -> Result<()> {
        info!(
            addr = %self.local_addr()?,
            exports = self.exports.len(),
            tls = self.tls.is_some(),
            "NBD server listening"
        );
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
            let tls = self.tls.clone();
            tokio::spawn(
                async move {
                    match connection(stream, &exports, tls.as_ref()).await {
                        Ok(()) => debug!("connection closed"),
                        Err(e) => info!(error = %e, "connection dropped"),
                    }
                }
                .instrument(info_span!("nbd", %peer)),
            );
        }
    }
}

async fn connection(
    mut stream: TcpStream,
    exports: &ExportTable,
    tls: Option<&TlsAcceptor>,
) -> Result<()> {
    stream
        .set_nodelay(true)
        .map_err(|source| Error::NbdSocket {
            during: "setting TCP_NODELAY",
            source,
        })?;
    let timed_out = |_| Error::NbdProtocol("handshake timed out".into());
    let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
    let no_zeroes = tokio::time::timeout_at(deadline, handshake::greet(&mut stream))
        .await
        .map_err(timed_out)??;
    let Some(acceptor) = tls else {
        let outcome = tokio::time::timeout_at(
            deadline,
            handshake::options(&mut stream, exports, TlsMode::Off, no_zeroes),
        )
        .await
        .map_err(timed_out)??;
        let Outcome::Go(negotiated) = outcome else {
            return Ok(());
        };
        let export = chosen(exports, &negotiated)?;
        let (r, w) = stream.into_split();
        return transmission::serve(r, w, export, negotiated).await;
    };
    let outcome = tokio::time::timeout_at(
        deadline,
        handshake::options(&mut stream, exports, TlsMode::Required, no_zeroes),
    )
    .await
    .map_err(timed_out)??;
    if outcome != Outcome::StartTls {
        return Ok(());
    }
    let mut stream = tokio::time::timeout_at(deadline, acceptor.accept(stream))
        .await
        .map_err(timed_out)?
        .map_err(|e| Error::NbdTls(format!("TLS handshake failed: {e}")))?;
    let outcome = tokio::time::timeout_at(
        deadline,
        handshake::options(&mut stream, exports, TlsMode::Active, no_zeroes),
    )
    .await
    .map_err(timed_out)??;
    let Outcome::Go(negotiated) = outcome else {
        return Ok(());
    };
    let export = chosen(exports, &negotiated)?;
    let (r, w) = tokio::io::split(stream);
    transmission::serve(r, w, export, negotiated).await
}

fn chosen(exports: &ExportTable, negotiated: &Negotiated) -> Result<Arc<Export>> {
    let export = exports
        .get(&negotiated.export.name)
        .cloned()
        .ok_or_else(|| Error::NbdProtocol("export vanished".into()))?;
    debug!(
        export = export.name(),
        structured = negotiated.structured,
        "transmission"
    );
    Ok(export)
}
