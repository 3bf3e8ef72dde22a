//! Benchmarks of picocenter-rs (`pico bench ...`): whole-system figures against baselines
//! measured in the same run, written as JSON and SVG charts into one output directory whose
//! README says how they were made.
//!
//! - [`restore`]: time to a restored tenant's first correct answer, per app and restore mode.
//! - [`latency_proxy`]: puts a realistic network (delay, bandwidth) between the worker and its
//!   object store, since this kernel has no netem.
//! - [`chart`], [`outdir`]: SVG bar charts and the output directory; [`garage`]: an S3 server.

pub mod chart;
pub mod garage;
pub mod latency_proxy;
pub mod outdir;
pub mod restore;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} failed: {1}")]
    Tool(String, String),
}

impl BenchError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        BenchError::Io {
            path: path.into(),
            source,
        }
    }
}
