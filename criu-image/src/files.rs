//! Where the decoders get an image's small files from: a stored checkpoint's manifest, which
//! keeps them inline, or a dump on disk (the only I/O of the crate).

use std::path::Path;

use pagestore::{FileContent, Manifest};

/// The files a checkpoint keeps inline (everything but its page files), as (name, bytes).
pub(crate) fn inline_files(manifest: &Manifest) -> impl Iterator<Item = (&str, &[u8])> {
    manifest.files.iter().filter_map(|f| match &f.content {
        FileContent::Inline(bytes) => Some((f.name.as_str(), bytes.as_slice())),
        FileContent::Paged(_) => None,
    })
}

/// The files of the dump in `dir` whose names `wanted` picks, as (name, bytes); unreadable ones
/// are skipped with a warning (what is read from them is an optimisation, never a reason to
/// fail a swap-out).
pub(crate) fn read_dir_files(dir: &Path, wanted: impl Fn(&str) -> bool) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !wanted(&name) {
            continue;
        }
        match std::fs::read(entry.path()) {
            Ok(bytes) => files.push((name, bytes)),
            Err(e) => tracing::warn!(file = %name, error = %e, "skipping an image file"),
        }
    }
    files
}
