//! What a worker of a cluster keeps beside its tenants (`hub_link` fills it in): the address
//! of its hub, which new tenants' names and ports are claimed at, and the fence that is up
//! while its lease has run out. Apart from `hub_link` so that the worker's state (`host`) holds
//! them without depending on the link that drives them.

use std::net::SocketAddr;

use crate::error::{Error, Result};
use crate::hub_wire::Claim;

/// Where this worker's hub is, for the calls other than heartbeats (claims).
#[derive(Clone, Debug)]
pub(crate) struct HubAddress {
    pub(crate) addr: SocketAddr,
    pub(crate) transport: crate::api::client::Transport,
    pub(crate) token: String,
    pub(crate) worker: String,
}

impl HubAddress {
    /// Claims `name` and `port` for a new tenant of this worker; fails with the hub's reason
    /// when another tenant holds the port or the name lives on another worker.
    pub(crate) async fn claim(&self, name: &str, port: u16) -> Result<()> {
        let claim = Claim {
            worker: self.worker.clone(),
            name: name.to_string(),
            port,
        };
        let body = serde_json::to_value(&claim).map_err(Error::RequestUnencodable)?;
        crate::api::client::call_json(
            "the hub",
            self.addr,
            &self.transport,
            &self.token,
            axum::http::Method::POST,
            "/v1/claims",
            Some(&body),
        )
        .await
        .map(|_| ())
    }
}

/// Whether this worker may change its tenants: not once its lease ran out, until the hub
/// answers again. The hub may then have declared it dead and placed its tenants elsewhere, so a
/// worker without a lease runs nothing (its tenants are paused) and writes no checkpoint (a
/// swap-out would race the other worker's generations of the same tenant).
#[derive(Debug, Default)]
pub(crate) struct Fence {
    fenced: std::sync::atomic::AtomicBool,
}

impl Fence {
    /// Fails while the lease has run out.
    pub(crate) fn check(&self) -> Result<()> {
        if self.is_up() {
            return Err(Error::NoLease);
        }
        Ok(())
    }

    pub(crate) fn is_up(&self) -> bool {
        self.fenced.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub(crate) fn set(&self, up: bool) {
        self.fenced.store(up, std::sync::atomic::Ordering::SeqCst);
    }
}
