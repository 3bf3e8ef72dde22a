//! `pico bench dedup --codecs`: the candidate encodings of cold pages, measured on the corpus's
//! own distinct pages, so that the encoding the store uses is chosen on real checkpoints
//! (docs/store-format.md#dense-cold-packs has the table of a run and the choice).
//!
//! Each candidate encodes every distinct non-zero page of a group once, in the order an ingest
//! meets them (checkpoint by checkpoint, page file by page file): bytes are what the candidate
//! keeps of them (dictionaries included); "decode us" is the time to decode the unit holding one
//! page when that page is read alone (a frame decodes whole), one core, over a sample of units.
//! Candidates that would break "one ranged GET of at most 64 KiB per page" are shown for
//! reference only.

use std::collections::HashSet;
use std::time::Instant;

use pagestore::{PageId, PAGE_SIZE};
use serde::Serialize;

use super::corpus::Checkpoint;
use super::kinds::Kind;
use crate::error::{Error, Result};

/// One candidate's figures on one group.
#[derive(Clone, Debug, Serialize)]
pub struct CodecRow {
    pub layout: &'static str,
    pub candidate: String,
    /// Distinct non-zero pages of the group, and their bytes.
    pub pages: u64,
    pub raw_bytes: u64,
    /// What the candidate keeps (dictionaries included).
    pub stored_bytes: u64,
    /// The largest unit one page read fetches (a page, a frame).
    pub unit_bytes: u64,
    /// Microseconds to decode the unit of one page read alone.
    pub decode_us: f64,
    /// Encoding speed, MB/s of raw pages, one core.
    pub encode_mb_s: f64,
    /// Whether it keeps every page one ranged GET of at most 64 KiB away.
    pub one_small_get: bool,
}

/// How a candidate groups and compresses pages.
#[derive(Clone, Copy, Debug)]
enum Candidate {
    Lz4,
    Zstd {
        level: i32,
        pages: usize,
        dict: bool,
    },
}

impl Candidate {
    fn name(self) -> String {
        match self {
            Candidate::Lz4 => "lz4 per page (ingest's encoding)".into(),
            Candidate::Zstd { level, pages, dict } => {
                let unit = match pages {
                    1 => "per page".to_string(),
                    n if n * PAGE_SIZE >= 1 << 20 => {
                        format!("{} MiB groups", (n * PAGE_SIZE) >> 20)
                    }
                    n => format!("frames of {n} pages"),
                };
                let dict = if dict { " + dictionary per kind" } else { "" };
                format!("zstd -{level} {unit}{dict}")
            }
        }
    }
    fn pages(self) -> usize {
        match self {
            Candidate::Lz4 => 1,
            Candidate::Zstd { pages, .. } => pages,
        }
    }
}

/// The candidates, cheapest first.
const CANDIDATES: [Candidate; 11] = [
    Candidate::Lz4,
    Candidate::Zstd {
        level: 3,
        pages: 1,
        dict: false,
    },
    Candidate::Zstd {
        level: 9,
        pages: 1,
        dict: false,
    },
    Candidate::Zstd {
        level: 3,
        pages: 1,
        dict: true,
    },
    Candidate::Zstd {
        level: 3,
        pages: 4,
        dict: false,
    },
    Candidate::Zstd {
        level: 9,
        pages: 4,
        dict: false,
    },
    Candidate::Zstd {
        level: 15,
        pages: 4,
        dict: false,
    },
    Candidate::Zstd {
        level: 9,
        pages: 4,
        dict: true,
    },
    Candidate::Zstd {
        level: 9,
        pages: 8,
        dict: false,
    },
    Candidate::Zstd {
        level: 9,
        pages: 16,
        dict: false,
    },
    Candidate::Zstd {
        level: 3,
        pages: 256,
        dict: false,
    },
];

/// Size of a trained dictionary (zstd's default for `--train`).
const DICT_BYTES: usize = 112 << 10;
/// Units whose decoding is timed.
const DECODE_SAMPLE: usize = 2000;

/// The distinct non-zero pages of `group`, in ingest order, by tenant kind.
fn distinct_pages(group: &[&Checkpoint]) -> Result<Vec<(Kind, Vec<u8>)>> {
    let mut seen: HashSet<PageId> = HashSet::new();
    let mut out = Vec::new();
    for c in group {
        let mut names: Vec<_> = std::fs::read_dir(&c.dir)
            .map_err(|e| Error::io(&c.dir, e))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| criu_image::names::is_pages_file(n))
            .collect();
        names.sort();
        for name in names {
            let path = c.dir.join(&name);
            let data = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
            for page in data.chunks_exact(PAGE_SIZE) {
                let id = PageId::of(page);
                if !id.is_zero() && seen.insert(id) {
                    out.push((c.kind, page.to_vec()));
                }
            }
        }
    }
    Ok(out)
}

fn zstd_err(e: std::io::Error) -> Error {
    Error::io("<zstd>", e)
}

/// Measures every candidate on the distinct pages of one group.
pub fn survey(layout: &'static str, group: &[&Checkpoint]) -> Result<Vec<CodecRow>> {
    let pages = distinct_pages(group)?;
    let raw_bytes = (pages.len() * PAGE_SIZE) as u64;
    let mut rows = Vec::new();
    for candidate in CANDIDATES {
        rows.push(measure(layout, candidate, &pages, raw_bytes)?);
    }
    Ok(rows)
}

fn measure(
    layout: &'static str,
    candidate: Candidate,
    pages: &[(Kind, Vec<u8>)],
    raw_bytes: u64,
) -> Result<CodecRow> {
    // Units: runs of neighbouring pages of one kind (a frame never mixes dictionaries).
    let mut units: Vec<(Kind, Vec<u8>)> = Vec::new();
    for (kind, page) in pages {
        match units.last_mut() {
            Some((k, unit)) if *k == *kind && unit.len() < candidate.pages() * PAGE_SIZE => {
                unit.extend_from_slice(page)
            }
            _ => units.push((*kind, page.clone())),
        }
    }
    let (level, dict) = match candidate {
        Candidate::Lz4 => (0, false),
        Candidate::Zstd { level, dict, .. } => (level, dict),
    };
    let mut dictionaries: Vec<(Kind, Vec<u8>)> = Vec::new();
    if dict {
        for kind in Kind::ALL {
            let samples: Vec<&[u8]> = pages
                .iter()
                .filter(|(k, _)| *k == kind)
                .map(|(_, p)| p.as_slice())
                .collect();
            if samples.len() < 16 {
                continue;
            }
            let d = zstd::dict::from_samples(&samples, DICT_BYTES).map_err(zstd_err)?;
            dictionaries.push((kind, d));
        }
    }
    let dict_of = |kind: Kind| {
        dictionaries
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, d)| d.as_slice())
            .unwrap_or(&[])
    };
    let started = Instant::now();
    let mut encoded: Vec<Vec<u8>> = Vec::with_capacity(units.len());
    let mut compressors: Vec<(Kind, zstd::bulk::Compressor<'static>)> = Vec::new();
    for (kind, unit) in &units {
        let e = match candidate {
            // Exactly what ingest writes: lz4, or raw when lz4 saves too little.
            Candidate::Lz4 => pagestore::codec::encode(unit).1,
            Candidate::Zstd { .. } => {
                let ctx = match compressors.iter_mut().position(|(k, _)| k == kind) {
                    Some(i) => &mut compressors[i].1,
                    None => {
                        let c = zstd::bulk::Compressor::with_dictionary(level, dict_of(*kind))
                            .map_err(zstd_err)?;
                        compressors.push((*kind, c));
                        &mut compressors.last_mut().expect("just pushed").1
                    }
                };
                ctx.include_checksum(false).map_err(zstd_err)?;
                ctx.compress(unit).map_err(zstd_err)?
            }
        };
        encoded.push(e);
    }
    let encode_s = started.elapsed().as_secs_f64();
    let stored_bytes = encoded.iter().map(|e| e.len() as u64).sum::<u64>()
        + dictionaries
            .iter()
            .map(|(_, d)| d.len() as u64)
            .sum::<u64>();
    let unit_bytes = encoded.iter().map(|e| e.len() as u64).max().unwrap_or(0);

    // Decode time of one page read alone: its unit decoded whole (lz4: the real page blocks).
    let step = (units.len() / DECODE_SAMPLE).max(1);
    let sample: Vec<usize> = (0..units.len()).step_by(step).collect();
    let started = Instant::now();
    match candidate {
        Candidate::Lz4 => {
            for &i in &sample {
                let page = match encoded[i].len() {
                    PAGE_SIZE => encoded[i].clone(),
                    _ => lz4_flex::block::decompress(&encoded[i], PAGE_SIZE)
                        .map_err(|e| Error::io("<lz4>", std::io::Error::other(e.to_string())))?,
                };
                if page != units[i].1 {
                    return Err(Error::BadOptions("lz4 did not round-trip".into()));
                }
            }
        }
        Candidate::Zstd { .. } => {
            let mut ctxs: Vec<(Kind, zstd::bulk::Decompressor<'static>)> = Vec::new();
            for &i in &sample {
                let kind = units[i].0;
                let ctx = match ctxs.iter_mut().position(|(k, _)| *k == kind) {
                    Some(j) => &mut ctxs[j].1,
                    None => {
                        let d = zstd::bulk::Decompressor::with_dictionary(dict_of(kind))
                            .map_err(zstd_err)?;
                        ctxs.push((kind, d));
                        &mut ctxs.last_mut().expect("just pushed").1
                    }
                };
                let out = ctx
                    .decompress(&encoded[i], units[i].1.len())
                    .map_err(zstd_err)?;
                if out != units[i].1 {
                    return Err(Error::BadOptions(format!(
                        "{} did not round-trip",
                        candidate.name()
                    )));
                }
            }
        }
    }
    let us = started.elapsed().as_secs_f64() * 1e6 / sample.len().max(1) as f64;
    Ok(row(
        layout,
        candidate,
        pages,
        raw_bytes,
        stored_bytes,
        unit_bytes,
        us,
        encode_s,
    ))
}

#[allow(clippy::too_many_arguments)]
fn row(
    layout: &'static str,
    candidate: Candidate,
    pages: &[(Kind, Vec<u8>)],
    raw_bytes: u64,
    stored_bytes: u64,
    unit_bytes: u64,
    decode_us: f64,
    encode_s: f64,
) -> CodecRow {
    CodecRow {
        layout,
        candidate: candidate.name(),
        pages: pages.len() as u64,
        raw_bytes,
        stored_bytes,
        unit_bytes,
        decode_us,
        encode_mb_s: raw_bytes as f64 / 1e6 / encode_s.max(1e-9),
        one_small_get: unit_bytes <= 64 << 10,
    }
}

/// The survey as a text table.
pub fn table(rows: &[CodecRow]) -> String {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let mut s = format!(
        "{:<14}{:<44}{:>10}{:>10}{:>8}{:>12}{:>11}{:>11}\n",
        "layout", "candidate", "raw MiB", "MiB", "ratio", "unit KiB", "decode us", "enc MB/s"
    );
    for r in rows {
        s.push_str(&format!(
            "{:<14}{:<44}{:>10.2}{:>10.2}{:>8.3}{:>12.1}{:>11.1}{:>11.0}\n",
            r.layout,
            format!("{}{}", r.candidate, if r.one_small_get { "" } else { " *" }),
            mib(r.raw_bytes),
            mib(r.stored_bytes),
            r.stored_bytes as f64 / r.raw_bytes.max(1) as f64,
            r.unit_bytes as f64 / 1024.0,
            r.decode_us,
            r.encode_mb_s
        ));
    }
    s.push_str("* a page read fetches more than 64 KiB: for reference only\n");
    s
}
