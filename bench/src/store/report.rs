//! The outputs of `pico bench store`: the result table, the goals checked against it, the
//! chart, and the results directory (`results.json`, `store.svg`, `README.md`). Kept apart from
//! the measuring ([`super::run`]) so that changing how a figure is shown never touches how it is
//! taken.

use std::path::Path;

use charts::{BarChart, Group};

use super::tiers::{self, TierRead};
use super::{IngestFigures, Report, GOAL_RATIO};
use crate::error::Result;
use crate::provenance;

const MB: f64 = 1e6;

/// The result table as text.
pub fn table(r: &Report) -> String {
    let mut s = format!(
        "{:<34} {:>10} {:>9} {:>9} {:>14} {:>12}\n",
        "what", "MB", "seconds", "MB/s", "compressed MB", "uploaded MB"
    );
    let ingest_row = |s: &mut String, what: &str, f: &IngestFigures| {
        s.push_str(&format!(
            "{:<34} {:>10.1} {:>9.3} {:>9.0} {:>14.1} {:>12.2}\n",
            what,
            f.logical_bytes as f64 / MB,
            f.seconds,
            f.mb_s,
            f.bytes_compressed as f64 / MB,
            f.bytes_uploaded as f64 / MB
        ));
    };
    for i in &r.inputs {
        ingest_row(&mut s, &format!("ingest {}", i.input.name), &i.ingest);
        s.push_str(&format!(
            "{:<34} {:>10.1} {:>9.3} {:>9.0}   ratio {:.2}\n",
            format!("  b3sum+lz4 {}", i.input.name),
            i.baseline.logical_bytes as f64 / MB,
            i.baseline.seconds,
            i.baseline.mb_s,
            i.ingest_to_baseline
        ));
    }
    ingest_row(&mut s, "ingest, all inputs", &r.ingest);
    s.push_str(&format!(
        "{:<34} {:>10.1} {:>9.3} {:>9.0}   (b3sum {:.3} s + lz4 {:.3} s)\n",
        "b3sum+lz4, all inputs",
        r.baseline.logical_bytes as f64 / MB,
        r.baseline.seconds,
        r.baseline.mb_s,
        r.baseline.b3sum_s,
        r.baseline.lz4_s
    ));
    ingest_row(
        &mut s,
        "ingest until local tier populated",
        &r.ingest_local_populated,
    );
    ingest_row(&mut s, "ingest without local tier", &r.ingest_without_local);
    ingest_row(&mut s, "re-ingest (every page known)", &r.reingest);
    ingest_row(&mut s, "ingest into S3 (Garage, loopback)", &r.ingest_s3);
    s.push_str(&format!(
        "\n{:<34} {:>10} {:>9} {:>9} {:>10} {:>10}\n",
        "read back from", "MB", "seconds", "MB/s", "cold GETs", "GETs/GiB"
    ));
    for (name, t) in tier_rows(r) {
        s.push_str(&format!(
            "{:<34} {:>10.1} {:>9.3} {:>9.0} {:>10} {:>10.1}\n",
            name,
            t.bytes as f64 / MB,
            t.seconds,
            t.mb_s,
            t.cold_gets,
            t.cold_gets_per_gib
        ));
    }
    s
}

fn tier_rows(r: &Report) -> Vec<(String, &TierRead)> {
    vec![
        ("memory".into(), &r.reads.hot),
        (format!("local ({})", r.local_engine), &r.reads.local),
        ("cold dir".into(), &r.reads.cold_dir),
        ("cold S3 (Garage, loopback)".into(), &r.reads.cold_s3),
        (
            format!(
                "cold S3 ({} ms, {} MB/s link)",
                r.remote_link.delay_ms, r.remote_link.mb_s_per_connection
            ),
            &r.reads.cold_s3_remote,
        ),
    ]
}

/// The issue's goals, checked.
pub fn goals(r: &Report) -> String {
    format!(
        "- ingest {:.0} MB/s vs b3sum+lz4 {:.0} MB/s: {:.2}x the baseline's time (goal: within \
         {GOAL_RATIO}x) — {}; local tier populated {:.0} MB/s ({:.2}x); without the local tier \
         {:.0} MB/s ({:.2}x)\n\
         - re-ingest of the same images: {} bytes compressed, {} bytes uploaded (the manifests), \
         {:.0} MB/s\n\
         - cold S3 reads: {:.1} GETs per GiB restored\n",
        r.ingest.mb_s,
        r.baseline.mb_s,
        r.ingest_to_baseline,
        if r.ingest_to_baseline <= GOAL_RATIO {
            "met"
        } else {
            "NOT met"
        },
        r.ingest_local_populated.mb_s,
        r.ingest_local_populated.seconds / r.baseline.seconds.max(1e-9),
        r.ingest_without_local.mb_s,
        r.ingest_without_local.seconds / r.baseline.seconds.max(1e-9),
        r.reingest.bytes_compressed,
        r.reingest.bytes_uploaded,
        r.reingest.mb_s,
        r.cold_gets_per_gib
    )
}

/// Throughput of every step, MB/s.
pub fn chart(r: &Report) -> String {
    let mut rows = vec![
        ("ingest".to_string(), r.ingest.mb_s),
        ("b3sum + lz4".to_string(), r.baseline.mb_s),
        (
            "ingest, local tier populated".to_string(),
            r.ingest_local_populated.mb_s,
        ),
        (
            "ingest, no local tier".to_string(),
            r.ingest_without_local.mb_s,
        ),
        ("re-ingest (known)".to_string(), r.reingest.mb_s),
        ("ingest into S3".to_string(), r.ingest_s3.mb_s),
    ];
    rows.extend(
        tier_rows(r)
            .into_iter()
            .map(|(name, t)| (format!("read {name}"), t.mb_s)),
    );
    BarChart {
        title: format!(
            "Page store throughput, {:.0} MB of images (MB/s, higher is better)",
            r.ingest.logical_bytes as f64 / MB
        ),
        unit: "MB/s".into(),
        series: vec!["MB/s".into()],
        groups: rows
            .into_iter()
            .map(|(label, v)| Group {
                label,
                values: vec![v],
            })
            .collect(),
    }
    .render()
}

pub(super) fn write_outputs(r: &Report, out: &Path) -> Result<()> {
    provenance::write_json(out, "results.json", r)?;
    provenance::write(out, "store.svg", &chart(r))?;
    let inputs: Vec<String> = r
        .inputs
        .iter()
        .map(|i| {
            format!(
                "`{}` ({}, {:.1} MB of page files)",
                i.input.name,
                i.input.source,
                i.input.logical_bytes as f64 / MB
            )
        })
        .collect();
    let readme = format!(
        "# pico bench store\n\n\
         Inputs: {}. Synthetic = `bench::synth::page_file` (1 in 8 pages zero, 1 in 5 a repeat, \
         half the rest text-like, half random); criu = a real `criu dump` of the app \
         (`pico bench restore`'s apps; redis holds ~100 MB).\n\n\
         **Ingest**: each input as a new checkpoint into a fresh store (cold tier a directory, \
         local tier {}, both on this disk), wall clock of `PageStore::ingest`, i.e. to the durable \
         commit: packing, fsyncs and the manifest. The new pages are cached in the local tier \
         behind the commit (write-behind); **until local tier populated** is the time from the \
         first ingest until the local tier holds every new page. **Baseline**: {}. Both over the \
         same page files, already in the page cache, alternating run by run; medians of {} runs. \
         **Without local tier**: the same ingest into a store whose local tier is off (what \
         caching the new pages locally costs). \
         **Re-ingest**: the same images again (every page known). **Ingest into S3**: a fresh \
         store on Garage on loopback, one run.\n\n\
         **Reads**: every distinct non-zero page of all inputs through `read_pages` in batches of \
         {} (as prefetch does), each page decoded and hash-checked: memory (pages read once \
         before), local (memory emptied), cold dir / cold S3 (memory and local emptied; cold-dir \
         files are in the page cache). The remote row reads Garage through `latency_proxy` \
         ({} ms each way, {} MB/s per connection). GETs/GiB = cold GETs per GiB of logical \
         image restored.\n\n\
         ## Results\n\n```\n{}```\n\n![chart](store.svg)\n\n## Goals\n\n{}\n{}",
        inputs.join(", "),
        r.local_engine,
        r.baseline_command,
        r.runs,
        tiers::READ_BATCH,
        r.remote_link.delay_ms,
        r.remote_link.mb_s_per_connection,
        table(r),
        goals(r),
        r.provenance.markdown()
    );
    provenance::write(out, "README.md", &readme)
}
