//! Benchmarks of picocenter-rs (`pico bench ...`): whole-system figures against baselines
//! measured in the same run, written as JSON and SVG charts into one output directory whose
//! README says how they were made.
//!
//! - [`restore`]: time to a restored tenant's first correct answer, per app and restore mode.
//! - [`nbd`]: our NBD server against `nbdkit file` on the same image.
//! - [`latency_proxy`]: puts a realistic network (delay, bandwidth) between the worker and its
//!   object store, since this kernel has no netem.
//! - [`chart`], [`outdir`]: SVG bar charts and the output directory; [`garage`]: an S3 server.

pub mod chart;
mod error;
pub mod garage;
pub mod latency_proxy;
pub mod nbd;
mod nbdclient;
pub mod outdir;
pub mod restore;

pub use error::{Error, Result};
