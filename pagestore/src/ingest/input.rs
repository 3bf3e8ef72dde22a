//! An ingest's input: the flat directory of files it stores, listed and checked.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A file of the input directory.
pub(super) struct InputFile {
    pub(super) name: String,
    pub(super) path: PathBuf,
    pub(super) mode: u32,
    pub(super) size: u64,
}

/// The regular files of `dir`, sorted by name; anything else in it is refused.
pub(super) fn list_input(dir: &Path) -> Result<Vec<InputFile>> {
    use std::os::unix::fs::PermissionsExt;
    let bad = |reason: String| Error::BadInput {
        path: dir.to_path_buf(),
        reason,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path).map_err(|e| Error::io(&path, e))?;
        let name = entry
            .file_name()
            .into_string()
            .map_err(|n| bad(format!("file name {n:?} is not UTF-8")))?;
        if !meta.is_file() {
            return Err(bad(format!(
                "{name} is not a regular file; only flat directories of files (like a CRIU image \
                 directory) can be ingested"
            )));
        }
        out.push(InputFile {
            name,
            path,
            mode: meta.permissions().mode(),
            size: meta.len(),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The error of a file that changed size while it was read.
pub(super) fn changed_size(path: &Path) -> Error {
    Error::BadInput {
        path: path.to_path_buf(),
        reason: "file changed size while being ingested".into(),
    }
}
