//! TLS for NBD (rustls): the server's certificate and key, and the acceptor that upgrades a
//! connection after NBD_OPT_STARTTLS.
//!
//! Without TLS an export hands its memory image to anyone who can connect, so plaintext is
//! allowed on loopback only; with a certificate the server may listen anywhere and requires
//! STARTTLS before it says anything about its exports.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;

use crate::error::{Error, Result};

/// Loads a PEM certificate chain and private key into an acceptor ([`crate::tls`]).
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor> {
    let config = crate::tls::server_config(cert, key).map_err(Error::NbdTls)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
