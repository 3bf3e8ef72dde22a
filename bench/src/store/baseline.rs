//! The baseline ingest is held against: the same page files through Debian's `b3sum` and `lz4`
//! command-line tools, which is what hashing and compressing those bytes costs with tuned C and
//! Rust code and no store around it.
//!
//! Precisely: `b3sum --num-threads N FILES...` (one run over all page files, N = cores), then
//! `lz4 -1 -c FILE > /dev/null` for each page file (lz4 1.9 is single-threaded); the baseline time
//! is the sum of both wall-clock times. Neither writes anything to disk and neither skips zero
//! or repeated pages, while ingest also detects zero pages, looks every page up, packs, writes
//! and fsyncs packs, caches pages in the local tier and commits a manifest.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use serde::Serialize;

use crate::dedup::methods::run;
use crate::error::Result;

#[derive(Clone, Debug, Default, Serialize)]
pub struct BaselineTimes {
    pub b3sum_s: f64,
    pub lz4_s: f64,
    /// b3sum_s + lz4_s.
    pub total_s: f64,
}

/// What the baseline runs, for the README.
pub fn describe(threads: usize) -> String {
    format!(
        "`b3sum --num-threads {threads} FILES...` then `lz4 -1 -c FILE > /dev/null` per page file; \
         baseline time = sum of both"
    )
}

/// Times both tools once over `files` (already in the page cache: the caller reads them first).
pub fn measure(files: &[PathBuf], threads: usize) -> Result<BaselineTimes> {
    let started = Instant::now();
    run(Command::new("b3sum")
        .arg("--num-threads")
        .arg(threads.to_string())
        .args(files)
        .stdout(Stdio::null()))?;
    let b3sum_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    for f in files {
        run(Command::new("lz4")
            .args(["-1", "-c"])
            .arg(f)
            .stdout(Stdio::null()))?;
    }
    let lz4_s = started.elapsed().as_secs_f64();
    Ok(BaselineTimes {
        b3sum_s,
        lz4_s,
        total_s: b3sum_s + lz4_s,
    })
}
