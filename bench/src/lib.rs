//! Whole-system benchmarks behind `pico bench ...`.
//!
//! Micro-benchmarks of hot loops belong to criterion; these measure what an operator pays for:
//! bytes stored and seconds spent, on real CRIU checkpoints and real clients, against the tools
//! they would use instead, measured in the same run. Every suite writes its JSON, an SVG chart and
//! a README saying how the figures were made into one output directory ([`provenance`]), and
//! shows progress only on a terminal ([`progress`]).
//!
//! - [`density`]: the dense host as a whole: N mixed tenants registered, idle, woken at
//!   open-loop rates; memory per idle tenant, wake-up latency, CPU per wake/sleep cycle.
//! - [`restore`]: time to a restored tenant's first correct answer, per app and restore mode.
//! - [`dedup`]: stored bytes of a real checkpoint corpus: raw, tar|zstd, restic, pico.
//! - [`store`]: ingest and per-tier read throughput of the page store, against b3sum + lz4.
//! - [`nbd`]: our NBD server against `nbdkit file` on the same image.
//! - [`dns`]: queries/s of the hub's DNS for known names (dnsperf and our own generator), and
//!   its latency at a rate it sustains.
//! - [`forward`]: what the worker's forwarding of a tenant's port costs, against a direct
//!   connection to the same server.
//! - [`latency_proxy`]: a realistic network (delay, bandwidth) between the worker and its object
//!   store, since this kernel has no netem; [`garage`]: an S3 server for the cold modes.
//! - [`synth`]: synthetic memory images, deterministic from a seed (the tests' own too, through
//!   `testkit`).

pub mod dedup;
pub mod density;
pub mod dns;
mod error;
pub mod forward;
pub mod garage;
pub mod latency_proxy;
pub mod nbd;
mod nbdclient;
pub mod net;
pub mod progress;
pub mod provenance;
pub mod restore;
pub mod store;
pub mod synth;

pub use error::{Error, Result};
