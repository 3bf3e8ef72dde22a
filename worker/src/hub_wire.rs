//! What a worker and its hub say to each other (`hub_link` sends, the hub's API answers): a
//! worker's heartbeat and the lease it gets back, and the claim of a new tenant's name and
//! port. One definition for both sides.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::tenant::TenantState;

/// What a worker reports to its hub.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Its name in the cluster.
    pub worker: String,
    /// Its TCP API (`api_listen`), through which the hub wakes its tenants.
    pub api: SocketAddr,
    /// Where clients reach its tenants' ports.
    pub public_addr: IpAddr,
    pub memory_total_bytes: u64,
    pub memory_available_bytes: u64,
    /// Load average over the last minute, per core.
    pub load: f64,
    pub tenants: Vec<HostedTenant>,
}

/// One tenant a worker hosts, as its heartbeat reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostedTenant {
    pub name: String,
    pub port: u16,
    /// `None` while a swap of it is under way (its record is held): the hub keeps what it knew.
    pub state: Option<TenantState>,
    /// Its newest committed checkpoint (what another worker would restore) and its generation.
    #[serde(default)]
    pub checkpoint: Option<String>,
    pub generation: Option<u64>,
    /// Its memory in use (running) or at its last swap-out (asleep).
    pub rss_bytes: Option<u64>,
}

/// The hub's answer to a heartbeat: the worker may run its tenants for `lease_ms` from when it
/// sent the heartbeat (unless a later one is answered), except those in `release`, which the
/// hub has placed on another worker meanwhile: the worker gives them up at once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    pub lease_ms: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub release: Vec<String>,
}

/// What a worker asks of the hub before it adds a tenant (`POST /v1/claims`): the name and port
/// are its in the cluster, or the hub says why not (409).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    pub worker: String,
    pub name: String,
    pub port: u16,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_reads_back_as_sent() {
        let beat = Heartbeat {
            worker: "w1".into(),
            api: "127.0.0.1:7070".parse().unwrap(),
            public_addr: "127.0.0.1".parse().unwrap(),
            memory_total_bytes: 8 << 30,
            memory_available_bytes: 4 << 30,
            load: 0.25,
            tenants: vec![HostedTenant {
                name: "web".into(),
                port: 8080,
                state: Some(TenantState::SwappedOut),
                checkpoint: Some("web-3".into()),
                generation: Some(3),
                rss_bytes: Some(20 << 20),
            }],
        };
        let text = serde_json::to_string(&beat).unwrap();
        assert!(text.contains(r#""state":"swapped-out""#), "{text}");
        assert_eq!(serde_json::from_str::<Heartbeat>(&text).unwrap(), beat);
    }
}
