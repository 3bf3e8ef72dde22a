//! Benchmarks of picocenter-rs (`pico bench ...`): whole-system figures against baselines
//! measured in the same run, as JSON and charts.
//!
//! - [`latency_proxy`]: puts a realistic network (first-byte delay, bandwidth) between the worker
//!   and its object store, since this kernel has no netem.

pub mod latency_proxy;
