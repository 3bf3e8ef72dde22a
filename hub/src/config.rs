//! Typed configuration of the hub (the `[hub]` section of `pico.toml`).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    /// The DNS zone whose names are tenants: tenant `web` is `web.ZONE`.
    #[serde(default = "default_zone")]
    pub zone: String,
    /// Where the hub answers DNS, on UDP and TCP.
    #[serde(default = "default_dns_listen")]
    pub dns_listen: SocketAddr,
    /// The address of the zone's name server (`ns.ZONE`, the hub itself) in NS answers
    /// (default: `dns_listen`'s, unless that is unspecified, then loopback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ns_addr: Option<IpAddr>,
    /// Where the hub's API answers: workers report there, `pico hub ls` reads there.
    #[serde(default = "default_api_listen")]
    pub api_listen: SocketAddr,
    /// The hub's API is HTTPS with this certificate chain (PEM; it must name the address
    /// clients reach the hub at) and `tls_key_file`'s key; none: plain HTTP, for a trusted
    /// network only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key_file: Option<PathBuf>,
    /// What `pico hub ls` on this machine trusts the API's certificate through (PEM; default:
    /// `tls_cert_file`, right for a self-signed certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
    /// A file holding the bearer token of the hub's API, which workers present
    /// (`[worker.hub] token_file`). Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// A file holding the bearer token of the workers' APIs (their `api_token_file`), which the
    /// hub presents to wake their tenants (default: `token_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_token_file: Option<PathBuf>,
    /// A worker not heard from for this long is dead.
    #[serde(default = "default_dead_after_ms")]
    pub dead_after_ms: u64,
    /// How long a worker may run its tenants after a heartbeat the hub answered: shorter than
    /// `dead_after_ms`, so that a worker cut off from the hub has stopped them before the hub
    /// restores them elsewhere.
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
    /// TTL of a tenant's address in DNS answers, seconds (a few at most: a tenant may move).
    #[serde(default = "default_ttl_s")]
    pub ttl_s: u32,
    /// How long a DNS query for a sleeping tenant waits for its swap-in before it is answered
    /// anyway (its worker holds the client's connection until the tenant runs).
    #[serde(default = "default_wake_wait_ms")]
    pub wake_wait_ms: u64,
}

fn default_zone() -> String {
    "pico.test.".into()
}
fn default_dns_listen() -> SocketAddr {
    ([127, 0, 0, 1], 5353).into()
}
fn default_api_listen() -> SocketAddr {
    ([127, 0, 0, 1], 7071).into()
}
fn default_dead_after_ms() -> u64 {
    10_000
}
fn default_lease_ms() -> u64 {
    6_000
}
fn default_ttl_s() -> u32 {
    1
}
fn default_wake_wait_ms() -> u64 {
    1_000
}

impl HubConfig {
    /// The embedded defaults (a home is not needed: the hub keeps its state in the cold tier).
    pub fn embedded(_home: &Path) -> HubConfig {
        HubConfig {
            zone: default_zone(),
            dns_listen: default_dns_listen(),
            ns_addr: None,
            api_listen: default_api_listen(),
            tls_cert_file: None,
            tls_key_file: None,
            tls_ca_file: None,
            token_file: None,
            worker_token_file: None,
            dead_after_ms: default_dead_after_ms(),
            lease_ms: default_lease_ms(),
            ttl_s: default_ttl_s(),
            wake_wait_ms: default_wake_wait_ms(),
        }
    }

    /// The hub's bearer token: `$PICO_TOKEN` when set, else the content of `token_file`.
    pub fn token(&self) -> crate::Result<worker::protocol::ApiToken> {
        worker::protocol::ApiToken::cluster(self.token_file.as_deref()).map_err(|e| match e {
            worker::Error::TokenMissing => crate::HubError::TokenMissing,
            e => crate::HubError::Worker(e),
        })
    }

    /// How a client on this machine reaches the API: HTTPS trusting `tls_ca_file` (else the
    /// certificate itself) when the API is TLS, else plain HTTP.
    pub fn client_transport(&self) -> crate::Result<worker::protocol::Transport> {
        let ca = self
            .tls_ca_file
            .as_deref()
            .or(self.tls_cert_file.as_deref());
        Ok(worker::protocol::Transport::trusting(ca)?)
    }

    /// The name server's address in NS answers.
    pub fn ns_addr(&self) -> IpAddr {
        match self.ns_addr {
            Some(addr) => addr,
            None if self.dns_listen.ip().is_unspecified() => [127, 0, 0, 1].into(),
            None => self.dns_listen.ip(),
        }
    }
}
