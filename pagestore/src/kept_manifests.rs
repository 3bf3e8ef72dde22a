//! The manifests of the checkpoints this machine committed, kept on its local disk beside the
//! local tier, so that reading one again costs no cold-tier round trip.
//!
//! Why: a worker holds its tenants' newest manifests in memory, but not across a restart. The
//! first wake-up of each tenant after an upgrade of the worker read its manifest from the cold
//! tier, and then the full manifest that one is a delta of: one or two round trips (~40 ms each
//! through the bench's link) before its restore set's, and a wake-up whose pages were all on
//! this machine waited on the cold tier all the same.
//!
//! A copy, never a dependency: a manifest is named by the hash of its bytes, so a kept one is
//! checked against its id as one read from the cold tier is, and one that fails (torn by a
//! crash, damaged) is deleted and read from the cold tier. It is kept only once its checkpoint
//! is committed, by the process that committed it (an ingest or a derive) while it holds the
//! local tier; deleted when this process drops the checkpoint (retention, forget), and by gc for
//! checkpoints dropped elsewhere (a tenant moved to another worker). `verify` reads the cold
//! tier's copies, never these. Each is one file `<checkpoint id>.manifest` of the manifest's
//! bytes, written to a temporary file renamed into place; a failure to keep one is logged and
//! ignored. Disk use: the manifests of this worker's tenants' retained checkpoints.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use tracing::{debug, warn};

use crate::manifest::CheckpointId;

const SUFFIX: &str = ".manifest";

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

pub(crate) struct KeptManifests {
    dir: PathBuf,
}

impl KeptManifests {
    /// The directory of kept manifests beside the local tier's directory `local`.
    pub(crate) fn dir_beside(local: &Path) -> Option<PathBuf> {
        let name = local.file_name()?.to_string_lossy().into_owned();
        Some(local.with_file_name(format!("{name}-manifests")))
    }

    /// Opens (creating) `dir`; `None`, logged, if it cannot be made: manifests are then read
    /// from the cold tier as before.
    pub(crate) fn open(dir: &Path) -> Option<KeptManifests> {
        match std::fs::create_dir_all(dir) {
            Ok(()) => Some(KeptManifests {
                dir: dir.to_path_buf(),
            }),
            Err(e) => {
                warn!(dir = %dir.display(), error = %e, "manifests are not kept on the local disk");
                None
            }
        }
    }

    fn path_of(&self, id: &CheckpointId) -> PathBuf {
        self.dir.join(format!("{id}{SUFFIX}"))
    }

    /// The kept bytes of checkpoint `id`'s manifest, if kept and sound (hashing to `id`).
    /// Read in place, as the pack index cache is: a manifest is a small file.
    pub(crate) fn load(&self, id: &CheckpointId) -> Option<Vec<u8>> {
        let path = self.path_of(id);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                warn!(path = %path.display(), error = %e, "cannot read a kept manifest");
                return None;
            }
        };
        if CheckpointId::of_manifest_bytes(&bytes) != *id {
            warn!(checkpoint = %id, "dropping a damaged kept manifest; reading it from the cold tier");
            self.forget(id);
            return None;
        }
        Some(bytes)
    }

    /// Keeps `bytes`, the manifest of the committed checkpoint `id`.
    pub(crate) fn keep(&self, id: &CheckpointId, bytes: &[u8]) {
        let seq = TMP_SEQ.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .dir
            .join(format!(".{id}.{}.{seq}.tmp", std::process::id()));
        let kept =
            std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, self.path_of(id)));
        if let Err(e) = kept {
            let _ = std::fs::remove_file(&tmp);
            warn!(checkpoint = %id, error = %e, "manifest not kept on the local disk");
        }
    }

    /// Deletes the kept manifest of `id`, if any.
    pub(crate) fn forget(&self, id: &CheckpointId) {
        let path = self.path_of(id);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn!(path = %path.display(), error = %e, "cannot delete a kept manifest"),
        }
    }

    /// Deletes the files last written before `before` that are not the kept manifest of a
    /// checkpoint `live` names (manifests of checkpoints dropped by another process, temporary
    /// files of a killed one). How many went.
    pub(crate) fn retain(&self, before: SystemTime, live: impl Fn(&CheckpointId) -> bool) -> usize {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) => {
                warn!(dir = %self.dir.display(), error = %e, "cannot list kept manifests");
                return 0;
            }
        };
        let mut gone = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let kept = name
                .strip_suffix(SUFFIX)
                .and_then(CheckpointId::parse)
                .is_some_and(|id| live(&id));
            let older = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|at| at < before);
            if !kept && older && std::fs::remove_file(entry.path()).is_ok() {
                gone += 1;
            }
        }
        debug!(gone, "kept manifests of dropped checkpoints deleted");
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept() -> (tempfile::TempDir, KeptManifests) {
        let dir = tempfile::tempdir().unwrap();
        let kept = KeptManifests::open(&dir.path().join("local-manifests")).unwrap();
        (dir, kept)
    }

    #[test]
    fn a_kept_manifest_is_read_back_only_while_it_hashes_to_its_id() {
        let (_dir, kept) = kept();
        let bytes = b"a manifest's bytes".to_vec();
        let id = CheckpointId::of_manifest_bytes(&bytes);
        assert_eq!(kept.load(&id), None);
        kept.keep(&id, &bytes);
        assert_eq!(kept.load(&id), Some(bytes));

        // Damaged on disk: refused and deleted.
        std::fs::write(kept.path_of(&id), b"a manifest's bytez").unwrap();
        assert_eq!(kept.load(&id), None);
        assert!(!kept.path_of(&id).exists());
    }

    #[test]
    fn only_manifests_of_live_checkpoints_and_newer_files_are_retained() {
        let (_dir, kept) = kept();
        let ids: Vec<CheckpointId> = (0..3u8)
            .map(|i| {
                let bytes = vec![i; 8];
                let id = CheckpointId::of_manifest_bytes(&bytes);
                kept.keep(&id, &bytes);
                id
            })
            .collect();
        std::fs::write(kept.dir.join(".leftover.1.0.tmp"), b"x").unwrap();
        // Written after the gc began: kept whatever the listing said.
        assert_eq!(kept.retain(SystemTime::UNIX_EPOCH, |_| false), 0);

        let later = SystemTime::now() + std::time::Duration::from_secs(1);
        assert_eq!(kept.retain(later, |id| *id == ids[1]), 3);
        assert!(kept.load(&ids[0]).is_none() && kept.load(&ids[2]).is_none());
        assert!(kept.load(&ids[1]).is_some());
        kept.forget(&ids[1]);
        assert!(kept.load(&ids[1]).is_none());
        kept.forget(&ids[1]);
    }

    #[test]
    fn kept_manifests_live_beside_the_local_tier() {
        assert_eq!(
            KeptManifests::dir_beside(Path::new("/home/pico/local")),
            Some(PathBuf::from("/home/pico/local-manifests"))
        );
    }
}
