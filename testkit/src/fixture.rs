//! Fixtures kept in the repository (stores and records written by earlier versions): a test
//! works on a copy, so that a fixture is never modified in place.

use std::path::Path;

/// Copies the directory tree `from` to `to` (created), regular files and directories only.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dst = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dst);
        } else {
            std::fs::copy(entry.path(), &dst).unwrap();
        }
    }
}
