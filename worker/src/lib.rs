//! The worker: runs tenants, checkpoints idle ones with CRIU into the page store, and restores
//! them with CRIU lazy pages through the pager.
//!
//! `pico worker run` is a daemon ([`daemon`]) that owns the tenants of one machine ([`Worker`]
//! and its tenant table, `host`): it serves each tenant's public port and forwards to the
//! tenant in its own network namespace (`serving`, [`netns`]), waking it on a connection and
//! swapping it out when idle or when memory runs short (`supervisor`), and after a crash takes
//! up where the last worker stopped (`recovery`). The CLI talks to it over HTTP on a unix
//! socket, a control plane over TCP with a bearer token (`api`, carrying the operations of
//! [`protocol`] to `dispatch`), and Prometheus scrapes its [`metrics`]. A tenant is started and
//! removed by `lifecycle`, checkpointed by `swap_out` and brought back by the stages of `swap_in`;
//! `activeset` learns what a restore touches first. [`criu`] wraps the CRIU binary and
//! [`process`] the processes it leaves behind.

mod activeset;
mod activity;
pub mod adopt;
mod api;
mod backoff;
pub mod cgroup;
mod checkpoint;
mod cluster;
pub mod config;
pub mod confine;
mod cpu;
mod crashpoint;
pub mod criu;
mod criu_rpc;
mod criu_swrk;
pub mod daemon;
mod disk_quota;
mod dispatch;
mod dump_check;
mod error;
mod handover;
mod host;
mod host_memory;
pub mod hub_link;
pub mod hub_wire;
mod image_tmpfs;
mod kdat;
mod kernel_forward;
pub mod launch;
pub mod lazy_gate;
mod lifecycle;
mod locality;
mod lost_faults;
pub mod metrics;
pub mod mounts;
pub mod netns;
mod peer;
pub mod process;
mod program_sets;
pub mod protocol;
mod proxy_header;
mod quiesce;
pub mod readiness;
mod recovery;
pub mod sandbox;
mod scheduled_gc;
pub mod sd_notify;
mod serving;
mod socket_activation;
mod supervisor;
mod swap_in;
mod swap_out;
pub mod tenant;
mod tenant_cgroup;
pub mod tenant_files;
pub mod tenant_log;
pub mod userns;
mod whole_staging;

pub use activeset::{load_activeset, store_activeset, ACTIVESET_FORMAT};
pub use config::{ActiveSetInstall, HubLinkConfig, WorkerConfig};
pub use daemon::run;
pub use error::{Error, Result};
pub use host::Worker;
pub use kernel_forward::rules::LinkAddrs;
