//! TLS for NBD (rustls): the server's certificate and key, and the acceptor that upgrades a
//! connection after NBD_OPT_STARTTLS.
//!
//! Without TLS an export hands its memory image to anyone who can connect, so plaintext is
//! allowed on loopback only; with a certificate the server may listen anywhere and requires
//! STARTTLS before it says anything about its exports.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::error::{Error, Result};

/// Loads a PEM certificate chain and private key into an acceptor (TLS 1.2 and 1.3, ring).
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor> {
    let bad = |what: &str, path: &Path, e: String| {
        Error::NbdTls(format!("{what} {}: {e}", path.display()))
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad("cannot read certificates from", cert, e.to_string()))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad("bad certificate in", cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no certificate in", cert, "expected PEM".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| bad("cannot read a private key from", key, e.to_string()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::NbdTls(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| Error::NbdTls(format!("certificate and key do not fit: {e}")))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
