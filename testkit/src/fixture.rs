//! Fixtures kept in the repository (stores and records written by earlier versions): a test
//! works on a copy, so that a fixture is never modified in place.

use std::path::Path;

use pagestore::PAGE_SIZE;

/// A page of a fixed pseudo-random sequence (a 64-bit LCG, Knuth's constants, the top byte of
/// each step): fixtures' incompressible pages, the same bytes in every version.
pub fn lcg_page(seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..PAGE_SIZE)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 56) as u8
        })
        .collect()
}

/// A page of `line` repeated (cut at the page's end): fixtures' compressible pages.
pub fn repeated_line_page(line: &str) -> Vec<u8> {
    line.bytes().cycle().take(PAGE_SIZE).collect()
}

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
