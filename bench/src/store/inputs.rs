//! The memory images `pico bench store` ingests: a synthetic mix (the generator the store's own
//! tests use, [`crate::synth`]) and real CRIU checkpoints of real apps (made the way `pico bench
//! restore` makes its eager-restore images, [`crate::restore::checkpoint_app`]).

use std::path::{Path, PathBuf};

use pagestore::PAGE_SIZE;
use serde::Serialize;
use worker::criu::Criu;

use crate::error::{Error, Result};
use crate::restore::{checkpoint_app, App};

/// One input: an image directory, and its page files (what ingest splits into pages).
#[derive(Clone, Debug, Serialize)]
pub struct Input {
    pub name: String,
    /// `synthetic` or `criu`.
    pub source: &'static str,
    #[serde(skip)]
    pub dir: PathBuf,
    #[serde(skip)]
    pub page_files: Vec<PathBuf>,
    /// Bytes of its page files.
    pub logical_bytes: u64,
    pub files: usize,
}

impl Input {
    /// Describes the image directory `dir`.
    pub fn scan(name: &str, source: &'static str, dir: &Path) -> Result<Input> {
        let mut page_files = Vec::new();
        let (mut logical_bytes, mut files) = (0, 0);
        for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let entry = entry.map_err(|e| Error::io(dir, e))?;
            let meta = entry.metadata().map_err(|e| Error::io(entry.path(), e))?;
            files += 1;
            let file_name = entry.file_name().to_string_lossy().into_owned();
            if criu_image::PAGED_FILES.is_paged(&file_name, meta.len()) {
                logical_bytes += meta.len();
                page_files.push(entry.path());
            }
        }
        page_files.sort();
        Ok(Input {
            name: name.to_string(),
            source,
            dir: dir.to_path_buf(),
            page_files,
            logical_bytes,
            files,
        })
    }
}

/// A synthetic image of `mib` MiB: [`crate::synth::page_file`]'s mix of zero (1 in 8), repeated
/// (1 in 5), text-like and random pages.
pub fn synthetic(root: &Path, mib: u64) -> Result<Input> {
    let dir = root.join("synthetic");
    let pages = (mib << 20) as usize / PAGE_SIZE;
    crate::synth::checkpoint_dir(&dir, 42, pages).map_err(|e| Error::io(&dir, e))?;
    Input::scan(&format!("synthetic-{mib}mib"), "synthetic", &dir)
}

/// A real CRIU checkpoint of `app` (redis holds ~100 MB; `heap_mb` sizes the large heap).
pub async fn criu_image(
    criu: &Criu,
    root: &Path,
    repo: &Path,
    app: App,
    heap_mb: u32,
) -> Result<Input> {
    let dir = root.join(format!("app-{}", app.name()));
    let images = root.join(format!("criu-{}", app.name()));
    checkpoint_app(criu, app, &dir, repo, heap_mb, &images).await?;
    Input::scan(&format!("criu-{}", app.name()), "criu", &images)
}
