//! Whole-system benchmarks behind `pico bench <suite>`: each suite is a module that sets up what
//! it measures, measures it against a reference where there is one, and returns a serializable
//! report.

mod error;
pub mod nbd;
mod nbdclient;

pub use error::{Error, Result};
