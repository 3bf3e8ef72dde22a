//! Keeping a dump (see the module doc of [`super`]): checked to hold the checkpoint's files,
//! its zero pages punched out, marked with its checkpoint, then moved into its tenant's place
//! unless a newer checkpoint's is there.

use std::os::fd::AsRawFd;
use std::path::Path;

use super::{Writing, MARKER};
use crate::error::{Error, Result};
use crate::manifest::{FileContent, Manifest};
use crate::resident::punch_zero_pages;

/// Readies `dump` to be kept for `manifest`: `false` if it does not hold a file of the
/// checkpoint at its size (it is not that checkpoint's dump); else its zero pages are punched
/// out (the disk holds only what the image needs) and its marker written.
pub(super) fn prepare(manifest: &Manifest, dump: &Path) -> Result<bool> {
    for file in &manifest.files {
        let path = dump.join(&file.name);
        let len = match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => meta.len(),
            _ => return Ok(false),
        };
        if len != file.size {
            return Ok(false);
        }
        if let FileContent::Paged(pages) = &file.content {
            let out = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            punch_zero_pages(&out, file.size, 0, pages).map_err(|e| Error::io(&path, e))?;
        }
    }
    let marker = dump.join(MARKER);
    let text = format!("{} {}\n", manifest.generation, manifest.created_ms);
    std::fs::write(&marker, text).map_err(|e| Error::io(&marker, e))?;
    Ok(true)
}

/// Moves `dump` to `path`, its tenant's place, unless the dump there is a newer checkpoint's:
/// two swap-outs of one tenant may keep their dumps at once, and the older one, kept last, must
/// not replace the one the next restore needs. The one replaced is deleted. Whether it was kept.
pub(super) fn install(
    writing: &Writing,
    manifest: &Manifest,
    dump: &Path,
    path: &Path,
) -> Result<bool> {
    let _installing = writing.installing.lock().unwrap_or_else(|p| p.into_inner());
    let there = marked(path);
    if there.is_some_and(|(generation, _)| generation > manifest.generation) {
        return Ok(false);
    }
    // The one there steps aside under a name of its own (deleted at the next open if this
    // process is killed meanwhile), then the dump takes the name.
    let aside = path.with_extension(format!("{}.replaced", manifest.generation));
    let replaced = match std::fs::rename(path, &aside) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(Error::io(path, e)),
    };
    if let Err(e) = std::fs::rename(dump, path) {
        if replaced {
            let _ = std::fs::rename(&aside, path);
        }
        // Another file system (a staging directory elsewhere): not kept.
        if e.raw_os_error() == Some(libc::EXDEV) {
            return Ok(false);
        }
        return Err(Error::io(path, e));
    }
    if replaced {
        let _ = std::fs::remove_dir_all(&aside);
    }
    Ok(true)
}

/// The checkpoint (generation, creation time) the kept dump at `dir` is marked with.
pub(super) fn marked(dir: &Path) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(dir.join(MARKER)).ok()?;
    let mut words = text.split_whitespace();
    let generation = words.next()?.parse().ok()?;
    let created_ms = words.next()?.parse().ok()?;
    Some((generation, created_ms))
}

/// A file in `dir` that is not one of `manifest`'s (nor the marker): CRIU would read it
/// unchecked.
pub(super) fn file_not_in(manifest: &Manifest, dir: &Path) -> Option<String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => return Some(format!("the directory ({e})")),
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name != MARKER && !manifest.files.iter().any(|f| f.name == name) {
            return Some(name);
        }
    }
    None
}

/// Deletes the kept dump at `dir` unless a restore holds it (its marker locked): whether it
/// was deleted.
pub(super) fn delete_unless_read(dir: &Path) -> bool {
    if let Ok(marker) = std::fs::File::open(dir.join(MARKER)) {
        // SAFETY: flock(2) on a descriptor this function owns.
        if unsafe { libc::flock(marker.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return false;
        }
    }
    std::fs::remove_dir_all(dir).is_ok()
}
