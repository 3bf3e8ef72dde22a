//! The hub: the control plane of many workers. It names tenants in DNS (`NAME.ZONE` answers
//! with the address of the worker hosting the tenant, and a query for a sleeping tenant wakes
//! it), and it knows the cluster from the workers' heartbeats, which it answers with a lease.
//! Its state lives in the cold tier, next to the checkpoints, so a hub restarted anywhere loses
//! nothing.
//!
//! `daemon` runs it (`pico hub run`); `registry` is what it knows and the rules that keep it
//! consistent, `durable` keeps that in the cold tier; `api` is its HTTP API, `dns` the
//! authoritative server and `wake` what a query for a tenant does, `moving` a move between workers, `draining` a worker's tenants moved
//! off it, `adding` a new tenant placed by the hub; `placement` is the rule that picks a worker for
//! a tenant.

pub mod adding;
pub mod api;
pub mod config;
pub mod daemon;
pub mod dns;
pub mod draining;
pub mod durable;
pub mod error;
pub mod hub;
pub mod moving;
pub mod placement;
pub mod registry;
pub mod wake;

pub use config::HubConfig;
pub use error::{HubError, Result};
