//! Shared test helpers for every crate of the workspace, in one place so that no test copies them.

pub mod garage;
pub mod synth;
