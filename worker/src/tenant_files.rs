//! A tenant's own files travel with its checkpoint, so that another worker can restore it: its
//! record ([`RECORD_FILE`]: the spec it was added with, as JSON) and its files
//! ([`FILES_ARCHIVE`]: its working directory and its log) are written into the dump's directory
//! after CRIU's images, and stored with them. A file that did not change since the last
//! checkpoint costs nothing in the store: the archive puts every file at a page boundary, so
//! its pages are the same pages as before (and the store keeps each page once).
//!
//! CRIU needs the files back where the tenant had them (it reopens the log at its size, the
//! working directory by path); system files (interpreters, libraries) are not carried: they must
//! be the same on every worker, and CRIU says which one differs.
//!
//! The archive: one header page or more (magic, version, the length of a JSON index of the
//! entries, the index), then each file's bytes from a page boundary on.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::tenant::{TenantDirs, TenantInfo};

/// The tenant's record in a checkpoint's image directory.
pub const RECORD_FILE: &str = "pico-tenant.json";
/// Its files in a checkpoint's image directory.
pub const FILES_ARCHIVE: &str = "pico-files.img";

const MAGIC: &[u8; 8] = b"PICOFILS";
/// The archive's version: written, and the newest read.
const VERSION: u32 = 1;
const PAGE: u64 = 4096;

/// Where an entry of the archive goes back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Place {
    /// Under the tenant's working directory.
    Cwd,
    /// The tenant's log.
    Log,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Entry {
    place: Place,
    /// Relative to its place ("" for the log, and for the working directory itself).
    path: PathBuf,
    mode: u32,
    kind: EntryKind,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
enum EntryKind {
    Dir,
    File { offset: u64, size: u64 },
    Symlink { target: PathBuf },
}

/// Writes the tenant's record and files into `dir` (its dump, before the ingest). Blocking.
pub fn stage(info: &TenantInfo, dirs: &TenantDirs, dir: &Path) -> Result<()> {
    let record = dir.join(RECORD_FILE);
    let text = info.to_record(&record)?;
    std::fs::write(&record, text).map_err(|e| Error::io(&record, e))?;
    let mut entries = Vec::new();
    let cwd = info.cwd(dirs);
    if cwd.is_dir() {
        walk(&cwd, Path::new(""), &mut entries)?;
    }
    let log = dirs.log();
    if let Ok(meta) = std::fs::symlink_metadata(&log) {
        if meta.is_file() {
            entries.push((
                Place::Log,
                PathBuf::new(),
                meta.mode(),
                Some((log, meta.len())),
            ));
        }
    }
    write_archive(&dir.join(FILES_ARCHIVE), entries)
}

/// [`stage`] on the blocking pool. A failure is logged, not returned: the checkpoint is
/// complete without the files for a restore on this worker, which keeps them; only another
/// worker could not take the tenant over from it.
pub(crate) async fn stage_beside(info: &TenantInfo, dirs: &TenantDirs, dir: &Path) {
    let (info, dirs, dir) = (info.clone(), dirs.clone(), dir.to_path_buf());
    let staged = tokio::task::spawn_blocking(move || stage(&info, &dirs, &dir)).await;
    match staged {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "its files are not stored with this checkpoint: no other worker could restore it")
        }
        Err(e) => tracing::warn!(error = %e, "staging its files failed"),
    }
}

/// One entry found by [`walk`]: where it goes, its path there, its mode, and for a regular file
/// its source and size (a directory or symlink has none; a symlink's target is read at write).
type Found = (Place, PathBuf, u32, Option<(PathBuf, u64)>);

/// Every directory, regular file and symlink under `root` (sockets, fifos and devices are not
/// carried: a tenant makes them again).
fn walk(root: &Path, rel: &Path, out: &mut Vec<Found>) -> Result<()> {
    let here = root.join(rel);
    let meta = std::fs::symlink_metadata(&here).map_err(|e| Error::io(&here, e))?;
    out.push((Place::Cwd, rel.to_path_buf(), meta.mode(), None));
    let mut children: Vec<_> = std::fs::read_dir(&here)
        .map_err(|e| Error::io(&here, e))?
        .filter_map(|e| e.ok())
        .collect();
    children.sort_by_key(|e| e.file_name());
    for child in children {
        let path = child.path();
        let rel = rel.join(child.file_name());
        let meta = std::fs::symlink_metadata(&path).map_err(|e| Error::io(&path, e))?;
        let kind = meta.file_type();
        if kind.is_dir() {
            walk(root, &rel, out)?;
        } else if kind.is_file() {
            out.push((Place::Cwd, rel, meta.mode(), Some((path, meta.len()))));
        } else if kind.is_symlink() {
            out.push((Place::Cwd, rel, meta.mode(), Some((path, u64::MAX))));
        }
    }
    Ok(())
}

/// Writes the archive of `found` at `path`.
fn write_archive(path: &Path, found: Vec<Found>) -> Result<()> {
    let mut entries = Vec::with_capacity(found.len());
    let mut offset = 0u64;
    let mut sources = Vec::new();
    for (place, rel, mode, file) in found {
        let kind = match file {
            None => EntryKind::Dir,
            Some((source, u64::MAX)) => EntryKind::Symlink {
                target: std::fs::read_link(&source).map_err(|e| Error::io(&source, e))?,
            },
            Some((source, size)) => {
                let at = offset;
                offset += size.div_ceil(PAGE) * PAGE;
                sources.push((source, at, size));
                EntryKind::File { offset: at, size }
            }
        };
        entries.push(Entry {
            place,
            path: rel,
            mode,
            kind,
        });
    }
    let index = serde_json::to_vec(&entries).map_err(|source| Error::TenantRecordUnencodable {
        path: path.to_path_buf(),
        source,
    })?;
    let header_len = (8 + 4 + 8 + index.len() as u64).div_ceil(PAGE) * PAGE;
    let io = |e| Error::io(path, e);
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    out.write_all(MAGIC).map_err(io)?;
    out.write_all(&VERSION.to_le_bytes()).map_err(io)?;
    out.write_all(&(index.len() as u64).to_le_bytes())
        .map_err(io)?;
    out.write_all(&index).map_err(io)?;
    pad(&mut out, header_len - (8 + 4 + 8 + index.len() as u64)).map_err(io)?;
    for (source, _, size) in sources {
        let file = std::fs::File::open(&source).map_err(|e| Error::io(&source, e))?;
        // A file that grew since it was listed is cut at its listed size; one that shrank is
        // padded with zeros: the archive's offsets hold.
        let copied = std::io::copy(&mut std::io::Read::take(file, size), &mut out).map_err(io)?;
        pad(&mut out, size.div_ceil(PAGE) * PAGE - copied).map_err(io)?;
    }
    out.flush().map_err(io)?;
    Ok(())
}

fn pad(out: &mut impl Write, mut n: u64) -> std::io::Result<()> {
    const ZEROS: [u8; 4096] = [0; 4096];
    while n > 0 {
        let chunk = n.min(PAGE) as usize;
        out.write_all(&ZEROS[..chunk])?;
        n -= chunk as u64;
    }
    Ok(())
}

/// The record of a checkpoint's tenant from the bytes of its [`RECORD_FILE`] (a tenant record
/// like `tenant.json`: [`TenantInfo::from_record`]).
pub fn record_of(bytes: &[u8]) -> Result<TenantInfo> {
    TenantInfo::from_record(Path::new(RECORD_FILE), bytes)
}

/// Puts the files of `archive` (the bytes of a [`FILES_ARCHIVE`]) back: the working directory's
/// under `cwd`, the log at `log`. An archive of a newer version than this build reads is
/// refused (`pagestore::format`). Blocking.
pub fn unpack(archive: &[u8], cwd: &Path, log: &Path) -> Result<()> {
    let bad = |why: &str| Error::BadFilesArchive(why.to_string());
    if archive.len() < 20 || &archive[..8] != MAGIC {
        return Err(bad("no archive header"));
    }
    let version = u32::from_le_bytes([archive[8], archive[9], archive[10], archive[11]]);
    pagestore::format::check("tenant files archive", FILES_ARCHIVE, version, VERSION)?;
    let mut len = [0u8; 8];
    len.copy_from_slice(&archive[12..20]);
    let index_len = usize::try_from(u64::from_le_bytes(len)).map_err(|_| bad("index length"))?;
    let index = archive
        .get(20..20usize.saturating_add(index_len))
        .ok_or_else(|| bad("index cut short"))?;
    let entries: Vec<Entry> =
        serde_json::from_slice(index).map_err(|e| bad(&format!("index: {e}")))?;
    let data_start = (20 + index_len as u64).div_ceil(PAGE) * PAGE;
    for entry in entries {
        if entry
            .path
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(bad(&format!("a path out of its place: {:?}", entry.path)));
        }
        let target = match entry.place {
            Place::Cwd => cwd.join(&entry.path),
            Place::Log => log.to_path_buf(),
        };
        let io = |e| Error::io(&target, e);
        match entry.kind {
            EntryKind::Dir => std::fs::create_dir_all(&target).map_err(io)?,
            EntryKind::Symlink { target: to } => {
                let _ = std::fs::remove_file(&target);
                std::os::unix::fs::symlink(&to, &target).map_err(io)?;
                continue;
            }
            EntryKind::File { offset, size } => {
                let start = data_start
                    .checked_add(offset)
                    .and_then(|s| usize::try_from(s).ok())
                    .ok_or_else(|| bad("file offset"))?;
                let bytes = archive
                    .get(start..start.saturating_add(size as usize))
                    .ok_or_else(|| bad("file cut short"))?;
                std::fs::write(&target, bytes).map_err(io)?;
            }
        }
        std::fs::set_permissions(
            &target,
            std::fs::Permissions::from_mode(entry.mode & 0o7777),
        )
        .map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenants_files_come_back_as_they_were() {
        let from = tempfile::tempdir().unwrap();
        let dirs = TenantDirs::new(from.path(), "web");
        let cwd = dirs.cwd();
        std::fs::create_dir_all(cwd.join("data/deep")).unwrap();
        std::fs::write(cwd.join("state.txt"), b"token-1").unwrap();
        std::fs::write(cwd.join("data/deep/big"), vec![7u8; 10_000]).unwrap();
        std::fs::set_permissions(
            cwd.join("state.txt"),
            std::fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        std::os::unix::fs::symlink("state.txt", cwd.join("link")).unwrap();
        std::fs::write(dirs.log(), b"started\nserving\n").unwrap();
        let info = TenantInfo::started(
            crate::tenant::TenantSpec::new("web", 8080, vec!["app".into()]),
            1,
            vec![],
            None,
        );
        let staging = tempfile::tempdir().unwrap();
        stage(&info, &dirs, staging.path()).unwrap();
        let archive = std::fs::read(staging.path().join(FILES_ARCHIVE)).unwrap();
        assert_eq!(archive.len() as u64 % PAGE, 0, "whole pages");
        let record = std::fs::read(staging.path().join(RECORD_FILE)).unwrap();
        assert_eq!(record_of(&record).unwrap().name, "web");

        let to = tempfile::tempdir().unwrap();
        let (cwd2, log2) = (to.path().join("cwd"), to.path().join("tenant.log"));
        unpack(&archive, &cwd2, &log2).unwrap();
        assert_eq!(std::fs::read(cwd2.join("state.txt")).unwrap(), b"token-1");
        assert_eq!(
            std::fs::metadata(cwd2.join("state.txt")).unwrap().mode() & 0o777,
            0o640
        );
        assert_eq!(
            std::fs::read(cwd2.join("data/deep/big")).unwrap(),
            vec![7u8; 10_000]
        );
        assert_eq!(
            std::fs::read_link(cwd2.join("link")).unwrap(),
            Path::new("state.txt")
        );
        assert_eq!(std::fs::read(&log2).unwrap(), b"started\nserving\n");
    }

    #[test]
    fn an_unchanged_file_keeps_its_pages_when_another_changes() {
        let from = tempfile::tempdir().unwrap();
        let dirs = TenantDirs::new(from.path(), "web");
        let cwd = dirs.cwd();
        std::fs::create_dir_all(&cwd).unwrap();
        std::fs::write(cwd.join("a"), vec![1u8; 3 * 4096]).unwrap();
        std::fs::write(cwd.join("b"), b"short").unwrap();
        let info = TenantInfo::started(
            crate::tenant::TenantSpec::new("web", 8080, vec!["app".into()]),
            1,
            vec![],
            None,
        );
        let pages = |dir: &Path| -> Vec<Vec<u8>> {
            std::fs::read(dir.join(FILES_ARCHIVE))
                .unwrap()
                .chunks(4096)
                .map(<[u8]>::to_vec)
                .collect()
        };
        let one = tempfile::tempdir().unwrap();
        stage(&info, &dirs, one.path()).unwrap();
        std::fs::write(cwd.join("b"), b"longer now").unwrap();
        let two = tempfile::tempdir().unwrap();
        stage(&info, &dirs, two.path()).unwrap();
        let (p1, p2) = (pages(one.path()), pages(two.path()));
        let file_a = vec![1u8; 4096];
        assert_eq!(p1.iter().filter(|p| **p == file_a).count(), 3);
        assert_eq!(p2.iter().filter(|p| **p == file_a).count(), 3);
    }

    #[test]
    fn an_archive_cannot_write_outside_its_places() {
        let entries = vec![Entry {
            place: Place::Cwd,
            path: PathBuf::from("../escape"),
            mode: 0o644,
            kind: EntryKind::Dir,
        }];
        let index = serde_json::to_vec(&entries).unwrap();
        let mut archive = MAGIC.to_vec();
        archive.extend_from_slice(&VERSION.to_le_bytes());
        archive.extend_from_slice(&(index.len() as u64).to_le_bytes());
        archive.extend_from_slice(&index);
        let to = tempfile::tempdir().unwrap();
        let err = unpack(&archive, &to.path().join("cwd"), &to.path().join("log")).unwrap_err();
        assert!(matches!(err, Error::BadFilesArchive(_)), "{err}");
        assert!(unpack(b"garbage", to.path(), to.path()).is_err());
        archive[8..12].copy_from_slice(&(VERSION + 1).to_le_bytes());
        let err = unpack(&archive, &to.path().join("cwd"), &to.path().join("log")).unwrap_err();
        assert!(
            matches!(&err, Error::Store(pagestore::Error::UnsupportedVersion { object, found: 2, supported: 1, .. })
                if object == FILES_ARCHIVE),
            "{err}"
        );
    }

    /// A record saved before records carried a format (the same fields, no `format`) reads as
    /// format 1; a newer one is refused by name and versions; what is saved now says its format.
    #[test]
    fn tenant_records_carry_a_format_and_a_newer_one_is_refused() {
        let info = TenantInfo::started(
            crate::tenant::TenantSpec::new("web", 8080, vec!["app".into()]),
            1,
            vec![],
            None,
        );
        let unversioned = serde_json::to_vec(&info).unwrap();
        assert_eq!(record_of(&unversioned).unwrap().name, "web");
        let saved = info.to_record(Path::new(RECORD_FILE)).unwrap();
        assert!(saved.starts_with(b"{\n  \"format\": 1,\n  \"name\": \"web\""));
        assert_eq!(record_of(&saved).unwrap().port, 8080);
        let text = String::from_utf8(saved).unwrap();
        let newer = text.replacen("\"format\": 1", "\"format\": 2", 1);
        let err = record_of(newer.as_bytes()).unwrap_err();
        assert!(
            matches!(&err, Error::Store(pagestore::Error::UnsupportedVersion { object, found: 2, supported: 1, .. })
                if object == RECORD_FILE),
            "{err}"
        );
    }
}
