//! Writing cgroup files, with errors that name the file.

use std::io::Write;
use std::path::Path;

pub(super) fn write_file(path: &Path, value: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| at(path, e))?;
    file.write_all(value.as_bytes()).map_err(|e| at(path, e))
}

/// `e` with the path it happened on, for the caller's error.
pub(super) fn at(path: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}
