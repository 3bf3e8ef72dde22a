//! `pico bench dedup`: what storing real checkpoints costs with our store and with the tools an
//! operator would use instead (raw files, `tar | zstd -3`, restic).
//!
//! The corpus is made in the run ([`corpus`]): N tenants of each [`kinds::Kind`] in both launch
//! [`kinds::Layout`]s, K checkpoints each with traffic in between. Each method then stores it
//! ([`methods`]); results are given for the whole corpus, per layout, and per layout and kind.

pub mod codecs;
pub mod corpus;
pub mod kinds;
pub mod methods;

use std::path::{Path, PathBuf};

use charts::{BarChart, Group as ChartGroup};
use serde::Serialize;
use tracing::info;
use worker::criu::Criu;

use self::corpus::Checkpoint;
use self::kinds::{Kind, Layout};
use self::methods::{PageCounts, PerCheckpoint};
use crate::error::{Error, Result};
use crate::provenance::{self, Provenance};

pub const METHODS: [&str; 4] = ["raw", "tar-zstd", "restic", "pico"];

#[derive(Clone, Debug)]
pub struct Options {
    /// Tenants of each kind, in each layout.
    pub tenants: u32,
    /// Checkpoints per tenant.
    pub generations: u32,
    /// Where the JSON, chart and README go.
    pub out: PathBuf,
    /// Scratch space for the corpus and the stores (a temporary directory when `None`).
    pub work: Option<PathBuf>,
    pub criu: PathBuf,
    /// Also measure the candidate encodings of cold pages on the corpus ([`codecs`]).
    pub codecs: bool,
}

/// A subset of the corpus that results are given for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Group {
    pub layout: Option<Layout>,
    pub kind: Option<Kind>,
}

impl Group {
    pub fn contains(&self, c: &Checkpoint) -> bool {
        self.layout.is_none_or(|l| l == c.layout) && self.kind.is_none_or(|k| k == c.kind)
    }
    pub fn layout_name(&self) -> &'static str {
        self.layout.map_or("all", Layout::name)
    }
    pub fn kind_name(&self) -> &'static str {
        self.kind.map_or("all", Kind::name)
    }
    pub fn label(&self) -> String {
        match (self.layout, self.kind) {
            (None, _) => "all".into(),
            (Some(l), None) => l.name().into(),
            (Some(l), Some(k)) => format!("{} {}", l.name(), k.name()),
        }
    }
}

/// All, each layout, then each layout and kind.
pub fn groups() -> Vec<Group> {
    let mut out = vec![Group {
        layout: None,
        kind: None,
    }];
    for layout in Layout::ALL {
        out.push(Group {
            layout: Some(layout),
            kind: None,
        });
    }
    for layout in Layout::ALL {
        for kind in Kind::ALL {
            out.push(Group {
                layout: Some(layout),
                kind: Some(kind),
            });
        }
    }
    out
}

#[derive(Clone, Debug, Serialize)]
pub struct CorpusInfo {
    pub tenants_per_kind: u32,
    pub generations: u32,
    pub kinds: Vec<Kind>,
    pub layouts: Vec<Layout>,
    pub tenants: usize,
    pub checkpoints: usize,
    pub logical_bytes: u64,
    /// Seconds spent launching tenants, driving traffic and dumping them.
    pub build_s: f64,
}

/// One row of the result table (the interface scripts read).
#[derive(Clone, Debug, Serialize)]
pub struct ResultRow {
    pub method: &'static str,
    pub layout: &'static str,
    pub kind: &'static str,
    pub checkpoints: usize,
    pub logical_bytes: u64,
    pub stored_bytes: u64,
    /// stored_bytes / raw stored_bytes.
    pub ratio_to_raw: f64,
    /// Seconds to store the whole group.
    pub store_s: f64,
    /// Seconds to restore one checkpoint of the group (`restore_checkpoint`).
    pub restore_s: f64,
    pub restore_checkpoint: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pages: Option<PageCounts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settle: Option<methods::Settle>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub corpus: CorpusInfo,
    pub results: Vec<ResultRow>,
    /// The candidate encodings of cold pages, per layout (`--codecs`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub codecs: Vec<codecs::CodecRow>,
    pub provenance: Provenance,
}

impl Report {
    pub fn row(&self, method: &str, layout: &str, kind: &str) -> Option<&ResultRow> {
        self.results
            .iter()
            .find(|r| r.method == method && r.layout == layout && r.kind == kind)
    }
}

/// The checkpoint of a group whose restore is timed: the newest of the group's first tenant.
fn restore_target<'a>(group: &[&'a Checkpoint]) -> Option<&'a Checkpoint> {
    let first = group.first()?;
    group
        .iter()
        .filter(|c| c.tenant == first.tenant)
        .max_by_key(|c| c.generation)
        .copied()
}

/// Runs the benchmark and writes `dedup.json`, `dedup.svg` and `README.md` into `opts.out`.
pub async fn run(opts: &Options) -> Result<Report> {
    if opts.tenants == 0 || opts.generations == 0 {
        return Err(Error::BadOptions(
            "--tenants and --generations must be at least 1".into(),
        ));
    }
    let provenance = Provenance::collect(&[
        ("criu", &["--version"]),
        ("restic", &["version"]),
        ("zstd", &["--version"]),
        ("tar", &["--version"]),
        ("python3", &["--version"]),
        ("redis-server", &["--version"]),
    ]);
    let temp;
    let scratch = match &opts.work {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            dir.clone()
        }
        None => {
            temp = tempfile::Builder::new()
                .prefix("pico-bench-dedup-")
                .tempdir_in("/var/tmp")
                .map_err(|e| Error::io("/var/tmp", e))?;
            temp.path().to_path_buf()
        }
    };
    let criu = Criu::detect(&opts.criu, 2).await.map_err(|e| Error::Criu {
        tenant: "(none yet)".into(),
        source: Box::new(e),
    })?;
    // Restored tenants are re-parented to this process, and must be reaped before CRIU can
    // restore another tree with the same pids.
    worker::process::become_subreaper()
        .map_err(|e| Error::io("prctl(PR_SET_CHILD_SUBREAPER)", e))?;

    let tenants = opts.tenants as usize * Kind::ALL.len() * Layout::ALL.len();
    let bar = crate::progress::bar(tenants as u64, "checkpoints");
    let corpus = corpus::build(
        &criu,
        &scratch.join("corpus"),
        opts.tenants,
        opts.generations,
        |name| {
            bar.set_message(name.to_string());
            bar.inc(1);
        },
    )
    .await?;
    bar.finish_and_clear();
    let all: Vec<&Checkpoint> = corpus.checkpoints.iter().collect();
    info!(
        checkpoints = all.len(),
        seconds = corpus.build_s,
        "corpus built"
    );

    // raw and tar-zstd: each checkpoint on its own.
    let bar = crate::progress::bar(all.len() as u64, "raw, tar-zstd");
    let mut raw = Vec::with_capacity(all.len());
    let mut tar = Vec::with_capacity(all.len());
    let raw_dir = scratch.join("raw");
    let tar_dir = scratch.join("tar-zstd");
    std::fs::create_dir_all(&tar_dir).map_err(|e| Error::io(&tar_dir, e))?;
    let raw_path = |c: &Checkpoint| raw_dir.join(format!("{}-gen-{}", c.tenant, c.generation));
    let tar_path =
        |c: &Checkpoint| tar_dir.join(format!("{}-gen-{}.tar.zst", c.tenant, c.generation));
    for c in &all {
        raw.push(methods::raw_store(c, &raw_path(c))?);
        tar.push(methods::tar_zstd_store(c, &tar_path(c))?);
        bar.inc(1);
    }
    bar.finish_and_clear();

    let groups = groups();
    let bar = crate::progress::bar(groups.len() as u64 * 2, "restic, pico");
    let mut results = Vec::new();
    for group in &groups {
        let members: Vec<usize> = (0..all.len()).filter(|&i| group.contains(all[i])).collect();
        let cps: Vec<&Checkpoint> = members.iter().map(|&i| all[i]).collect();
        let Some(target) = restore_target(&cps) else {
            continue;
        };
        let logical: u64 = cps.iter().map(|c| c.bytes).sum();
        let sum = |per: &[PerCheckpoint]| -> (u64, f64) {
            members.iter().fold((0, 0.0), |(b, s), &i| {
                (b + per[i].stored_bytes, s + per[i].store_s)
            })
        };
        let row = |method: &'static str, m: methods::Measured| ResultRow {
            method,
            layout: group.layout_name(),
            kind: group.kind_name(),
            checkpoints: cps.len(),
            logical_bytes: logical,
            stored_bytes: m.stored_bytes,
            ratio_to_raw: if logical > 0 {
                m.stored_bytes as f64 / logical as f64
            } else {
                0.0
            },
            store_s: m.store_s,
            restore_s: m.restore_s,
            restore_checkpoint: format!("{} gen {}", target.tenant, target.generation),
            pages: m.pages,
            settle: m.settle,
        };
        let (bytes, secs) = sum(&raw);
        results.push(row(
            "raw",
            methods::Measured {
                stored_bytes: bytes,
                store_s: secs,
                restore_s: methods::raw_restore(target, &raw_path(target), &scratch)?,
                pages: None,
                settle: None,
            },
        ));
        let (bytes, secs) = sum(&tar);
        results.push(row(
            "tar-zstd",
            methods::Measured {
                stored_bytes: bytes,
                store_s: secs,
                restore_s: methods::tar_zstd_restore(target, &tar_path(target), &scratch)?,
                pages: None,
                settle: None,
            },
        ));
        bar.set_message(format!("restic {}", group.label()));
        results.push(row(
            "restic",
            methods::restic_group(&cps, target, &scratch)?,
        ));
        bar.inc(1);
        bar.set_message(format!("pico {}", group.label()));
        results.push(row(
            "pico",
            methods::pico_group(&cps, target, &scratch).await?,
        ));
        bar.inc(1);
    }
    bar.finish_and_clear();

    let mut codec_rows = Vec::new();
    if opts.codecs {
        for layout in Layout::ALL {
            let members: Vec<&Checkpoint> =
                all.iter().filter(|c| c.layout == layout).copied().collect();
            info!(layout = layout.name(), "measuring cold-page encodings");
            codec_rows.extend(codecs::survey(layout.name(), &members)?);
        }
    }

    let report = Report {
        corpus: CorpusInfo {
            tenants_per_kind: opts.tenants,
            generations: opts.generations,
            kinds: Kind::ALL.to_vec(),
            layouts: Layout::ALL.to_vec(),
            tenants,
            checkpoints: all.len(),
            logical_bytes: all.iter().map(|c| c.bytes).sum(),
            build_s: corpus.build_s,
        },
        results,
        codecs: codec_rows,
        provenance,
    };
    write_outputs(&report, &opts.out)?;
    // A temporary scratch directory is removed when `temp` drops; `--work` is kept.
    Ok(report)
}

const MIB: f64 = 1024.0 * 1024.0;

/// The result table as text.
pub fn table(report: &Report) -> String {
    let mut s = format!(
        "{:<9} {:<13} {:<6} {:>5} {:>11} {:>11} {:>7} {:>9} {:>9}\n",
        "method",
        "layout",
        "kind",
        "ckpts",
        "logical MiB",
        "stored MiB",
        "ratio",
        "store s",
        "restore s"
    );
    for r in &report.results {
        s.push_str(&format!(
            "{:<9} {:<13} {:<6} {:>5} {:>11.1} {:>11.2} {:>7.4} {:>9.2} {:>9.3}\n",
            r.method,
            r.layout,
            r.kind,
            r.checkpoints,
            r.logical_bytes as f64 / MIB,
            r.stored_bytes as f64 / MIB,
            r.ratio_to_raw,
            r.store_s,
            r.restore_s
        ));
    }
    s
}

/// Stored MiB per method, per layout (and the whole corpus).
pub fn chart(report: &Report) -> String {
    let groups = ["all", "default", "deterministic"]
        .iter()
        .map(|layout| ChartGroup {
            label: (*layout).to_string(),
            values: METHODS
                .iter()
                .map(|m| {
                    report
                        .row(m, layout, "all")
                        .map_or(0.0, |r| r.stored_bytes as f64 / MIB)
                })
                .collect(),
        })
        .collect();
    BarChart {
        title: format!(
            "Stored MiB of {} checkpoints ({} tenants x {} generations)",
            report.corpus.checkpoints, report.corpus.tenants, report.corpus.generations
        ),
        unit: "MiB".into(),
        series: METHODS.iter().map(|m| m.to_string()).collect(),
        groups,
    }
    .render()
}

/// The goals of the stored-bytes issue, checked per layout: pico at most 0.6x restic's bytes
/// and at most 0.9x `tar | zstd -3`'s, after the store settled (recompression done).
pub fn goals(report: &Report) -> String {
    let mut s = String::new();
    for layout in ["default", "deterministic"] {
        let (Some(p), Some(r), Some(t)) = (
            report.row("pico", layout, "all"),
            report.row("restic", layout, "all"),
            report.row("tar-zstd", layout, "all"),
        ) else {
            continue;
        };
        let vs_restic = p.stored_bytes as f64 / r.stored_bytes.max(1) as f64;
        let vs_tar = p.stored_bytes as f64 / t.stored_bytes.max(1) as f64;
        let verdict = |x: f64, limit: f64| if x <= limit { "met" } else { "NOT met" };
        s.push_str(&format!(
            "- {layout}, {} generation(s): pico stores {:.2} MiB, restic {:.2} MiB, tar-zstd \
             {:.2} MiB: **{vs_restic:.3}x restic** (goal <= 0.6x: {}), **{vs_tar:.3}x tar-zstd** \
             (goal <= 0.9x: {}); store {:.2} s vs {:.2} s, restore one checkpoint {:.3} s vs \
             {:.3} s{}\n",
            report.corpus.generations,
            p.stored_bytes as f64 / MIB,
            r.stored_bytes as f64 / MIB,
            t.stored_bytes as f64 / MIB,
            verdict(vs_restic, 0.6),
            verdict(vs_tar, 0.9),
            p.store_s,
            r.store_s,
            p.restore_s,
            r.restore_s,
            match &p.settle {
                Some(settle) => format!(
                    "; {:.2} MiB right after the ingests (lz4), settled by gc in {:.2} s; \
                     manifests {:.2} MiB",
                    settle.fresh_bytes as f64 / MIB,
                    settle.settle_s,
                    settle.manifest_bytes as f64 / MIB
                ),
                None => String::new(),
            }
        ));
    }
    s
}

fn codecs_section(report: &Report) -> String {
    if report.codecs.is_empty() {
        return String::new();
    }
    format!(
        "## Cold-page encodings (`--codecs`)\n\n\
         Every distinct non-zero page of each layout's corpus, encoded once by each candidate: \
         bytes kept (dictionaries included), the largest unit one page read fetches, the time to \
         decode it for one page read alone, and the encoding speed (one core).\n\n```\n{}```\n\n",
        codecs::table(&report.codecs)
    )
}

fn write_outputs(report: &Report, out: &Path) -> Result<()> {
    provenance::write_json(out, "dedup.json", report)?;
    provenance::write(out, "dedup.svg", &chart(report))?;
    let c = &report.corpus;
    let readme = format!(
        "# pico bench dedup\n\n\
         Corpus: {} tenants of each of {} kinds (python content site, redis-server with data, \
         nginx with its own page) in both launch layouts (default ASLR; deterministic = ASLR off + \
         PYTHONHASHSEED=0), {} CRIU checkpoints each with traffic in between: {} tenants, {} \
         checkpoints, {:.1} MiB (built in {:.0} s).\n\n\
         Methods: `raw` (the image files copied), `tar-zstd` (`tar -cf - . | zstd -3` per \
         checkpoint), `restic` (one repository per group, repository v2 with its default zstd \
         compression, one `restic backup` of the group's checkpoints; restore = `restic restore \
         latest --include DIR`), `pico` (a fresh page store per group, each checkpoint ingested in \
         turn; restore = open the store in a new process and materialize from the cold tier). \
         Every restore is checked byte for byte against the original.\n\n\
         ratio = stored bytes / raw bytes; store s = time to store the whole group; restore s = \
         time to restore one checkpoint of it (the newest of its first tenant).\n\n\
         pico's stored bytes are those of the settled store: ingest writes lz4 packs (fast), then \
         `gc` recompresses them into zstd frames, as a worker does in the background.\n\n\
         ## Results\n\n```\n{}```\n\n![chart](dedup.svg)\n\n## Goals\n\n{}\n{}{}",
        c.tenants_per_kind,
        c.kinds.len(),
        c.generations,
        c.tenants,
        c.checkpoints,
        c.logical_bytes as f64 / MIB,
        c.build_s,
        table(report),
        goals(report),
        codecs_section(report),
        report.provenance.markdown()
    );
    provenance::write(out, "README.md", &readme)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_cover_all_layouts_and_kinds() {
        let g = groups();
        assert_eq!(g.len(), 1 + 2 + 6);
        assert_eq!(g[0].label(), "all");
        assert_eq!(g[1].layout_name(), "default");
        assert_eq!(g[3].label(), "default python");
        let c = Checkpoint {
            layout: Layout::Deterministic,
            kind: Kind::Redis,
            tenant: "t".into(),
            generation: 1,
            dir: PathBuf::new(),
            bytes: 1,
        };
        assert_eq!(g.iter().filter(|g| g.contains(&c)).count(), 3);
    }
}
