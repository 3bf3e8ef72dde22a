//! The worker: runs tenants, checkpoints idle ones with CRIU into the page store, and restores
//! them with CRIU lazy pages through the pager.
//!
//! `pico worker run` is a daemon ([`daemon`]) that owns the tenants of one machine; the CLI talks
//! to it over a unix socket with one JSON request per line ([`protocol`]). Swap-out and swap-in
//! are the two flows of [`swap`]; [`criu`] wraps the CRIU binary.

mod activeset;
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
pub mod process;
pub mod protocol;
pub mod readiness;
mod server;
pub mod swap;
pub mod tenant;
mod whole;
mod whole_staging;

pub use config::{ActiveSetInstall, WorkerConfig};
pub use daemon::run;
pub use error::{Error, Result};
pub use host::Worker;
