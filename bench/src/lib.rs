//! Whole-system benchmarks behind `pico bench ...`.
//!
//! Micro-benchmarks of hot loops belong to criterion; these measure what an operator pays for:
//! bytes stored and seconds spent, on real CRIU checkpoints, against the tools they would use
//! instead. Every suite writes its JSON, an SVG chart and a README saying how the figures were made
//! into one output directory ([`provenance`]), and shows progress only on a terminal
//! ([`progress`]).

pub mod dedup;
mod error;
pub mod progress;
pub mod provenance;
pub mod svg;

pub use error::{Error, Result};
