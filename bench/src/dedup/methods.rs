//! The four ways of storing the corpus, each measured the same way: bytes stored, seconds to store
//! the group, seconds to restore one checkpoint of it (checked byte for byte against the original).
//!
//! `raw` and `tar-zstd` store each checkpoint on its own, so a group's figures are sums over its
//! checkpoints and are measured once per checkpoint. `restic` and `pico` deduplicate across
//! checkpoints, so each group is stored into a fresh repository / store of its own.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use pagestore::config::StoreConfig;
use pagestore::{CheckpointRef, PageStore};
use serde::Serialize;

use super::corpus::{tree_bytes, Checkpoint};
use crate::error::{Error, Result};

/// Pages as our store counts them.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PageCounts {
    pub total: u64,
    pub zero: u64,
    pub unique: u64,
}

/// What storing one group with one method cost.
#[derive(Clone, Debug, Default)]
pub struct Measured {
    pub stored_bytes: u64,
    pub store_s: f64,
    pub restore_s: f64,
    pub pages: Option<PageCounts>,
    /// Ours: what was stored right after the ingests, before the store settled
    /// (recompression), and the seconds it took to settle.
    pub settle: Option<Settle>,
}

/// Our store before and after it settles (`pico store gc` recompresses ingest's fast packs).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Settle {
    /// Cold-tier bytes right after the last ingest.
    pub fresh_bytes: u64,
    /// Seconds the gc that recompressed them took.
    pub settle_s: f64,
    /// Of the settled bytes: manifests, and everything else not in packs (indexes are in the
    /// packs).
    pub manifest_bytes: u64,
}

/// Runs to completion (stdin as the caller set it); fails with its stderr.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let program = cmd.get_program().to_string_lossy().to_string();
    let out = cmd.output().map_err(|e| Error::ToolMissing {
        tool: program,
        source: e,
    })?;
    if out.status.success() {
        return Ok(());
    }
    Err(Error::ToolFailed {
        command: format!("{cmd:?}"),
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

fn fresh_dir(path: &Path) -> Result<()> {
    if path.exists() {
        std::fs::remove_dir_all(path).map_err(|e| Error::io(path, e))?;
    }
    std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))
}

fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| Error::io(to, e))?;
    for entry in std::fs::read_dir(from).map_err(|e| Error::io(from, e))? {
        let entry = entry.map_err(|e| Error::io(from, e))?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        if entry.file_type().map_err(|e| Error::io(&src, e))?.is_dir() {
            copy_dir(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst).map_err(|e| Error::io(&src, e))?;
        }
    }
    Ok(())
}

/// Fails unless every file of `original` is in `restored` with the same bytes.
pub fn same_files(method: &str, original: &Path, restored: &Path) -> Result<()> {
    for entry in std::fs::read_dir(original).map_err(|e| Error::io(original, e))? {
        let entry = entry.map_err(|e| Error::io(original, e))?;
        let a = std::fs::read(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
        let other = restored.join(entry.file_name());
        let b = std::fs::read(&other).map_err(|e| Error::io(&other, e))?;
        if a != b {
            return Err(Error::ToolFailed {
                command: format!("{method} restore of {}", original.display()),
                status: "restored bytes differ".into(),
                stderr: format!("{} differs from the original", other.display()),
            });
        }
    }
    Ok(())
}

/// Per-checkpoint figures of the methods that store checkpoints one by one.
#[derive(Clone, Debug, Default)]
pub struct PerCheckpoint {
    pub stored_bytes: u64,
    pub store_s: f64,
}

/// Raw: the image directory copied as it is.
pub fn raw_store(c: &Checkpoint, dest: &Path) -> Result<PerCheckpoint> {
    let started = Instant::now();
    copy_dir(&c.dir, dest)?;
    let store_s = started.elapsed().as_secs_f64();
    Ok(PerCheckpoint {
        stored_bytes: tree_bytes(dest)?,
        store_s,
    })
}

pub fn raw_restore(c: &Checkpoint, stored: &Path, scratch: &Path) -> Result<f64> {
    let target = scratch.join("restore-raw");
    remove(&target)?;
    let started = Instant::now();
    copy_dir(stored, &target)?;
    let s = started.elapsed().as_secs_f64();
    same_files("raw", &c.dir, &target)?;
    remove(&target)?;
    Ok(s)
}

/// `tar -cf - . | zstd -3`: what an operator would script.
pub fn tar_zstd_store(c: &Checkpoint, archive: &Path) -> Result<PerCheckpoint> {
    let started = Instant::now();
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(&c.dir)
        .args(["-cf", "-", "."])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| Error::ToolMissing {
            tool: "tar".into(),
            source: e,
        })?;
    let tar_out = tar.stdout.take().ok_or_else(|| Error::ToolFailed {
        command: "tar".into(),
        status: "no stdout".into(),
        stderr: String::new(),
    })?;
    let zstd = run(Command::new("zstd")
        .args(["-3", "-q", "-f", "-o"])
        .arg(archive)
        .stdin(Stdio::from(tar_out)));
    let status = tar.wait().map_err(|e| Error::io("tar", e))?;
    zstd?;
    if !status.success() {
        return Err(Error::ToolFailed {
            command: format!("tar -C {} -cf - .", c.dir.display()),
            status: status.to_string(),
            stderr: String::new(),
        });
    }
    let store_s = started.elapsed().as_secs_f64();
    let stored_bytes = std::fs::metadata(archive)
        .map_err(|e| Error::io(archive, e))?
        .len();
    Ok(PerCheckpoint {
        stored_bytes,
        store_s,
    })
}

pub fn tar_zstd_restore(c: &Checkpoint, archive: &Path, scratch: &Path) -> Result<f64> {
    let target = scratch.join("restore-tar-zstd");
    fresh_dir(&target)?;
    let started = Instant::now();
    run(Command::new("tar")
        .arg("--zstd")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(&target)
        .stdin(Stdio::null()))?;
    let s = started.elapsed().as_secs_f64();
    same_files("tar-zstd", &c.dir, &target)?;
    remove(&target)?;
    Ok(s)
}

fn restic(repo: &Path) -> Command {
    let mut c = Command::new("restic");
    c.env("RESTIC_REPOSITORY", repo)
        .env("RESTIC_PASSWORD", "pico-bench")
        .args(["--no-cache", "-q"])
        .stdin(Stdio::null());
    c
}

/// restic: one repository for the group, one `restic backup` of all its checkpoints.
pub fn restic_group(
    group: &[&Checkpoint],
    restore: &Checkpoint,
    scratch: &Path,
) -> Result<Measured> {
    let repo = scratch.join("restic-repo");
    remove(&repo)?;
    run(restic(&repo).args(["init", "--repository-version", "2"]))?;
    let started = Instant::now();
    let mut backup = restic(&repo);
    backup.args(["backup", "--host", "pico-bench"]);
    for c in group {
        backup.arg(&c.dir);
    }
    run(&mut backup)?;
    let store_s = started.elapsed().as_secs_f64();
    let stored_bytes = tree_bytes(&repo)?;

    let target = scratch.join("restore-restic");
    fresh_dir(&target)?;
    let started = Instant::now();
    run(restic(&repo)
        .args(["restore", "latest", "--target"])
        .arg(&target)
        .arg("--include")
        .arg(&restore.dir))?;
    let restore_s = started.elapsed().as_secs_f64();
    let relative = restore.dir.strip_prefix("/").unwrap_or(&restore.dir);
    same_files("restic", &restore.dir, &target.join(relative))?;
    remove(&target)?;
    remove(&repo)?;
    Ok(Measured {
        stored_bytes,
        store_s,
        restore_s,
        pages: None,
        settle: None,
    })
}

fn store_config(home: &Path) -> StoreConfig {
    let mut config = StoreConfig::embedded(home);
    // The local tier is a cache, not storage: stored bytes are the cold tier's.
    config.local.enabled = false;
    config
}

/// Our store: a fresh store for the group, every checkpoint ingested as its tenant's next one.
pub async fn pico_group(
    group: &[&Checkpoint],
    restore: &Checkpoint,
    scratch: &Path,
) -> Result<Measured> {
    let home = scratch.join("pico-store");
    remove(&home)?;
    let config = store_config(&home);
    let started = Instant::now();
    let store = PageStore::open(&config).await?;
    let mut restore_ref: Option<CheckpointRef> = None;
    for c in group {
        let report = store
            .ingest_with(&c.tenant, &c.dir, &criu_image::ingest_options())
            .await?;
        if c.tenant == restore.tenant && c.generation == restore.generation {
            restore_ref = Some(report.checkpoint);
        }
    }
    let store_s = started.elapsed().as_secs_f64();
    let fresh_bytes = tree_bytes(&home.join("cold"))?;
    // Settle: what the background recompression would do, finished by gc.
    let started = Instant::now();
    store.gc().await?;
    let settle_s = started.elapsed().as_secs_f64();
    let stats = store.stats().await?;
    drop(store);
    let stored_bytes = tree_bytes(&home.join("cold"))?;
    let restore_ref = restore_ref.ok_or_else(|| {
        Error::BadOptions(format!(
            "checkpoint to restore ({}) is not in its group",
            restore.tenant
        ))
    })?;

    let target: PathBuf = scratch.join("restore-pico");
    remove(&target)?;
    let started = Instant::now();
    // A cold start: a new process opens the store and materializes from the cold tier.
    let store = PageStore::open(&config).await?;
    store.materialize(&restore_ref, &target).await?;
    let restore_s = started.elapsed().as_secs_f64();
    drop(store);
    same_files("pico", &restore.dir, &target)?;
    remove(&target)?;
    remove(&home)?;
    Ok(Measured {
        stored_bytes,
        store_s,
        restore_s,
        pages: Some(PageCounts {
            total: stats.pages_total,
            zero: stats.pages_zero,
            unique: stats.pages_unique,
        }),
        settle: Some(Settle {
            fresh_bytes,
            settle_s,
            manifest_bytes: stats.manifest_bytes,
        }),
    })
}
