//! The worker: runs tenants, checkpoints idle ones with CRIU into the page store, and restores
//! them with CRIU lazy pages through the pager.
//!
//! `pico worker run` is a daemon ([`daemon`]) that owns the tenants of one machine ([`Worker`]
//! and its tenant table, `host`); the CLI talks to it over HTTP on a unix socket, a control
//! plane over TCP with a bearer token (`api`, carrying the operations of [`protocol`] to
//! `dispatch`), and Prometheus scrapes its [`metrics`]. A tenant is started and removed by
//! `lifecycle`, checkpointed by `swap_out` and brought back by the stages of `swap_in`;
//! `activeset` learns what a restore touches first. [`criu`] wraps the CRIU binary and
//! [`process`] the processes it leaves behind.

mod activeset;
mod api;
pub mod config;
pub mod criu;
mod criu_rpc;
mod criu_swrk;
pub mod daemon;
mod dispatch;
mod error;
mod host;
mod image_tmpfs;
mod kdat;
pub mod launch;
pub mod lazy_gate;
mod lifecycle;
mod locality;
pub mod metrics;
pub mod process;
pub mod protocol;
pub mod readiness;
mod swap_in;
mod swap_out;
pub mod tenant;
pub mod tenant_log;
mod whole_staging;

pub use config::{ActiveSetInstall, WorkerConfig};
pub use daemon::run;
pub use error::{Error, Result};
pub use host::Worker;
