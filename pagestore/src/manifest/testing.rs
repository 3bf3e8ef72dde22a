//! Manifests built by hand, for unit tests of the code that reads them (restore plans, whole
//! restores, staging, the store's own resident reads): one tenant `t`, generation 1, no packs,
//! parent or locality pack. Here, not in testkit, so that this crate's unit tests build them
//! of its own types (through testkit they would be another build's); testkit re-exports them.

use super::{FileContent, FileEntry, Manifest};

/// A manifest holding `files`.
pub fn of_files(files: Vec<FileEntry>) -> Manifest {
    Manifest {
        tenant: "t".into(),
        generation: 1,
        created_ms: 0,
        parent: None,
        packs: vec![],
        locality: None,
        files,
    }
}

/// A file entry of mode 0600.
pub fn file(name: &str, size: u64, content: FileContent) -> FileEntry {
    FileEntry {
        name: name.into(),
        mode: 0o600,
        size,
        content,
    }
}

/// The bytes a paged file of `ids` holds, cut to `size`: each page's bytes as `pages` gives them
/// by id, zeros for the zero page (what a file written out of its manifest must read as).
pub fn paged_bytes(ids: &[crate::PageId], pages: &[(crate::PageId, &[u8])], size: u64) -> Vec<u8> {
    let zero = [0u8; crate::PAGE_SIZE];
    let mut bytes = Vec::with_capacity(ids.len() * crate::PAGE_SIZE);
    for id in ids {
        let page = pages
            .iter()
            .find(|(p, _)| p == id)
            .map_or(&zero[..], |(_, b)| b);
        bytes.extend_from_slice(page);
    }
    bytes.truncate(size as usize);
    bytes
}
