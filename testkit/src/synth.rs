//! Synthetic checkpoint directories: page files with a known mix of zero, repeated, compressible and
//! random pages, plus a small inline file, so store tests need no CRIU. The generator's home is
//! `bench::synth` (`pico bench store` ingests the same images); the comparison is the tests' own.

pub use bench::synth::{checkpoint_dir, checkpoint_of_parts, page_file, Rng, PAGE};

use std::path::Path;

/// Whether two directories hold the same file names with the same bytes.
pub fn same_files(a: &Path, b: &Path) -> std::io::Result<bool> {
    let names = |d: &Path| -> std::io::Result<Vec<String>> {
        let mut v: Vec<String> = std::fs::read_dir(d)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()?;
        v.sort();
        Ok(v)
    };
    let (na, nb) = (names(a)?, names(b)?);
    if na != nb {
        return Ok(false);
    }
    for n in na {
        if std::fs::read(a.join(&n))? != std::fs::read(b.join(&n))? {
            return Ok(false);
        }
    }
    Ok(true)
}
