//! What can go wrong in the hub.

use std::net::SocketAddr;

pub type Result<T, E = HubError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("the cold tier (where the hub keeps its state): {0}")]
    Store(#[from] pagestore::Error),

    #[error(transparent)]
    Worker(#[from] worker::Error),

    #[error("the hub's record {key} is not valid JSON (fix or remove it): {source}")]
    BadRecord {
        key: String,
        #[source]
        source: serde_json::Error,
    },

    #[error(
        "the hub's record {key} is format version {found}, and this hub reads versions 1 to \
         {supported}: it was written by a newer picocenter (run that version or a later one)"
    )]
    RecordFormat {
        key: String,
        found: u32,
        supported: u32,
    },

    #[error("could not encode the hub's record: {0}")]
    RecordUnencodable(#[source] serde_json::Error),

    #[error(
        "the hub needs its token: PICO_TOKEN, or [hub] token_file naming a file that holds the \
         bearer token its API asks of workers and of `pico hub ls` (readable by root only)"
    )]
    TokenMissing,

    #[error(
        "[hub] lease_ms ({lease_ms}) must be shorter than dead_after_ms ({dead_after_ms}): a \
         worker cut off from the hub must stop its tenants before the hub gives them up"
    )]
    LeaseTooLong { lease_ms: u64, dead_after_ms: u64 },

    #[error("cannot serve {what} on {addr}: {source}")]
    Listen {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },

    #[error("the hub's API: {0}")]
    Tls(String),

    #[error("DNS: {0}")]
    Dns(#[from] crate::dns::DnsError),
}
