//! The operations a worker offers, as one enum: [`Request`] is the one list of what can be asked
//! of it, whichever front end asks. The API (`api`) carries each as an HTTP route (its
//! `routes` table) and [`Client`] asks a worker for one over its unix socket or TCP;
//! `dispatch` runs it. A variant's `op` tag (kebab-case) names the operation in that table.

use serde::{Deserialize, Serialize};

pub use crate::api::auth::{require_token, ApiToken, TOKEN_VAR};
pub use crate::api::client::{call_json, Client, Transport};

/// One operation of the worker, with its arguments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    Ping,
    Add(crate::tenant::TenantSpec),
    Ls,
    Status {
        name: String,
    },
    SwapOut {
        name: String,
    },
    SwapIn {
        name: String,
        /// Restore without the ActiveSet (for comparison).
        #[serde(default)]
        no_activeset: bool,
        /// How to install the ActiveSet this time (the worker's `activeset_install` if absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        install: Option<crate::config::ActiveSetInstall>,
    },
    ActiveSet {
        name: String,
    },
    /// Empties the caches the worker's store holds (for cold-start measurements): `hot`,
    /// `local`, or both when no tier is named.
    Evict {
        #[serde(default)]
        tier: Option<String>,
    },
    /// The worker's page store statistics, with its live tier counters.
    StoreStats,
    /// The store's request counters, read without touching any tier.
    Counters,
    Rm {
        name: String,
    },
    /// Gives up tenant `name` without a dump or touching its checkpoints: it lives on another
    /// worker now (the hub moved it).
    Release {
        name: String,
    },
    /// This machine's CPU as CRIU records it: `{"record": HEX}`.
    CpuRecord,
    /// Fails unless a tenant dumped on the CPU of `record` (hex, from `cpu-record`) may run here.
    CpuCheck {
        record: String,
    },
    /// How many of checkpoint `checkpoint`'s pages this worker holds (memory or local tier), of
    /// how many: the hub places a tenant where most of its pages are.
    Held {
        checkpoint: String,
    },
    /// Takes over tenant `name` from its checkpoint `checkpoint` in the shared cold tier
    /// (another worker hosted it), asleep until its next connection.
    Adopt {
        name: String,
        checkpoint: String,
        /// The worker that hosted it, still up (a move): its pages are read from there first.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        peer: Option<PeerRef>,
    },
    /// The last lines of the tenant's log (its stdout and stderr).
    Logs {
        name: String,
        /// How many lines ([`crate::tenant_log::DEFAULT_TAIL_LINES`] if absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tail: Option<usize>,
    },
}

/// Another worker of the cluster, as a peer tier: its name and API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRef {
    pub name: String,
    pub api: std::net::SocketAddr,
}
