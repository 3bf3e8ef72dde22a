//! The hub: the control plane that maps tenants' DNS names to workers, places swapped-out
//! tenants on a worker when a request for them arrives, and tracks workers by heartbeat.
//!
//! Today it holds the placement rule ([`placement`]); the daemon (`pico hub run`, DNS with
//! hickory, heartbeats over HTTP with axum) comes with the multi-host issue. The rule is pure so
//! that it can be tested on its own and reused by the daemon unchanged.

pub mod placement;
