//! Shared helpers for the tests of every crate: one place, not copies.

pub mod nbd;
