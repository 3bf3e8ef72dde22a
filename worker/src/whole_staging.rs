//! The tmpfs whole restores write their images into: mounted at the first whole restore and kept
//! while the worker runs, its files overwritten in place by the next image.
//!
//! **Why kept.** With a tmpfs mounted for each restore and unmounted after it, about one restore
//! in eight spent 10-35 ms instead of ~2.3 ms writing the Python counter's 11 MiB (5 of 42 in one
//! run here). `perf` put that time in the kernel, copying into and zeroing the freshly allocated
//! huge pages, with the thread on the CPU throughout: memory touched for the first time since
//! the hypervisor took it back (this VM reports free memory to its host in 2 MiB blocks, the very
//! size a huge page is allocated in). Memory that is never freed is never given back: an image
//! written over the previous one reuses its pages, and skips zeroing them as well.
//!
//! **Cost.** The pages of the last image written stay held while the worker runs, once per
//! worker (not per tenant): at most `whole_restore_below_mib` MiB plus
//! [`crate::image_tmpfs`]'s slack, or, after the whole restore of a dense tenant (see
//! `swap_in::whole::choice::dense_enough`), that tenant's image, up to `whole_restore_dense_below_mib`,
//! until a smaller image is written over it (each file is cut down to the image's size). The
//! tmpfs is private to the worker (mode 0700, root only) and holds nothing the memory tier did not
//! hold already.
//!
//! **Dense images too.** A dense tenant's image written into a tmpfs of its own was as slow to
//! write as the fresh memory above (Python with a 120 MiB dict woke in 323 ms against 132 ms
//! through this one, same run, 5 runs each; plain CRIU from tmpfs 113-128 ms), so this one takes
//! those as well when it is free.
//!
//! **Warmed at start.** The first image written into a fresh tmpfs pays the same price (a first
//! whole restore of a Python tenant spent 21-35 ms writing its image against 2-3 ms for the next
//! ones): the worker mounts the tmpfs when it starts and fills a file of its full size with
//! zeros, off every request's path; the first restore takes that file over as its page file.
//! Generally, a page file the next image needs under a name the tmpfs does not hold takes over
//! the largest file it holds under another name, instead of that one being freed and the new
//! one allocated.
//!
//! **One restore at a time** uses each kept tmpfs. Restores running beside it (up to
//! `max_concurrent_swaps`) take the others: one per concurrent swap beyond the first, for small
//! images only (at most `whole_restore_below_mib`), mounted on first use and unmounted once
//! unused for [`EXTRA_KEPT_FOR`] (so that an idle host holds only the first). In a burst of 20
//! wake-ups/s over 150 small tenants, the restores that mounted a fresh tmpfs each spent up to
//! 50-118 ms writing their image, against ~5 ms into a kept one. An image larger than a slot
//! takes, or one that finds every slot busy, gets a tmpfs of its own ([`ImageDir::Own`]), as every
//! restore did before.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pagestore::{FileContent, Manifest};
use tokio::sync::{Mutex, OwnedMutexGuard};
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::image_tmpfs::{fresh_mountpoint, ImageTmpfs};

/// How long a kept tmpfs beyond the first stays mounted unused.
pub(crate) const EXTRA_KEPT_FOR: std::time::Duration = std::time::Duration::from_secs(30);

/// The kept tmpfs, mounted on first use, and those of restores running beside it.
pub(crate) struct WholeStaging {
    /// What the first is warmed with, and the most the others hold: the size of a small image.
    bytes: u64,
    /// The first takes images up to a dense tenant's; the others small ones.
    slots: Vec<Slot>,
}

/// One kept tmpfs.
struct Slot {
    mountpoint: PathBuf,
    /// The most it holds: the largest image it takes.
    capacity: u64,
    mount: Arc<Mutex<Option<ImageTmpfs>>>,
    /// When a restore last took it (ms since the epoch).
    taken_ms: std::sync::atomic::AtomicU64,
}

/// Where one whole restore writes its image.
pub(crate) enum ImageDir {
    /// The kept tmpfs, held until this is dropped.
    Staged {
        _held: OwnedMutexGuard<Option<ImageTmpfs>>,
        dir: PathBuf,
    },
    /// A tmpfs of this restore's own, unmounted by [`ImageDir::release`].
    Own(ImageTmpfs),
}

impl WholeStaging {
    /// A staging tmpfs at `mountpoint`, not mounted yet, warmed with `bytes` and taking images
    /// of up to `capacity` (plus slack); and `beside` more, for restores running beside it, at
    /// `mountpoint` with `-1`, `-2`... appended, taking images of up to `bytes`.
    pub fn new(mountpoint: PathBuf, bytes: u64, capacity: u64, beside: usize) -> WholeStaging {
        let slot = |mountpoint: PathBuf, capacity: u64| Slot {
            mountpoint,
            capacity,
            mount: Arc::new(Mutex::new(None)),
            taken_ms: Default::default(),
        };
        let mut slots = vec![slot(mountpoint.clone(), capacity.max(bytes))];
        for n in 1..=beside {
            let mut name = mountpoint.clone().into_os_string();
            name.push(format!("-{n}"));
            slots.push(slot(PathBuf::from(name), bytes));
        }
        WholeStaging { bytes, slots }
    }

    /// A kept tmpfs, emptied of every file `manifest` does not overwrite; `None` when the image
    /// (`image_bytes` as a tmpfs holds it) is over the capacity of every one free, when other
    /// restores hold them all, or when one cannot be mounted or emptied (logged).
    pub fn take(&self, manifest: &Manifest, image_bytes: u64) -> Option<ImageDir> {
        let (slot, mut held) = self
            .slots
            .iter()
            .filter(|slot| image_bytes <= slot.capacity)
            .find_map(|slot| Some((slot, slot.mount.clone().try_lock_owned().ok()?)))?;
        if held.is_none() {
            match mount_fresh(slot) {
                Ok(tmpfs) => *held = Some(tmpfs),
                Err(e) => {
                    warn!(error = %e, "no staging tmpfs for whole restores");
                    return None;
                }
            }
        }
        slot.taken_ms.store(
            pagestore::clock::now_ms(),
            std::sync::atomic::Ordering::Relaxed,
        );
        let dir = slot.mountpoint.clone();
        if let Err(e) = keep_only_paged_files(&dir, manifest) {
            warn!(error = %e, "could not empty the staging tmpfs; unmounting it");
            *held = None;
            return None;
        }
        Some(ImageDir::Staged { _held: held, dir })
    }

    /// Mounts the first and fills it with one file of its full size, so that the first whole
    /// restore writes into memory already in use (see the module doc). Blocking: call it off the
    /// async runtime; a restore that comes first simply takes the tmpfs as it is.
    pub fn warm(&self) {
        let first = &self.slots[0];
        let Ok(mut held) = first.mount.clone().try_lock_owned() else {
            return;
        };
        if held.is_none() {
            match mount_fresh(first) {
                Ok(tmpfs) => *held = Some(tmpfs),
                Err(e) => {
                    warn!(error = %e, "no staging tmpfs for whole restores");
                    return;
                }
            }
        }
        let started = std::time::Instant::now();
        let path = first.mountpoint.join(WARM_FILE);
        let zeros = vec![0u8; 1 << 20];
        let written = std::fs::File::create(&path).and_then(|mut f| {
            use std::io::Write;
            (0..self.bytes.div_ceil(1 << 20)).try_for_each(|_| f.write_all(&zeros))
        });
        match written {
            Ok(()) => info!(
                bytes = self.bytes,
                ms = started.elapsed().as_millis() as u64,
                "staging tmpfs warmed"
            ),
            Err(e) => {
                warn!(error = %e, "could not warm the staging tmpfs");
                let _ = std::fs::remove_file(&path);
            }
        }
    }

    /// Unmounts every kept tmpfs beyond the first that no restore took for `unused` (their
    /// images' memory goes back to the host); returns how many. Blocking: call it off the async
    /// runtime.
    pub fn release_unused(&self, unused: std::time::Duration) -> usize {
        let before = pagestore::clock::now_ms().saturating_sub(unused.as_millis() as u64);
        let mut released = 0;
        for slot in &self.slots[1..] {
            if slot.taken_ms.load(std::sync::atomic::Ordering::Relaxed) > before {
                continue;
            }
            let Ok(mut held) = slot.mount.clone().try_lock_owned() else {
                continue;
            };
            if let Some(tmpfs) = held.take() {
                match tmpfs.unmount() {
                    Ok(()) => released += 1,
                    Err(e) => warn!(error = %e, "could not unmount a staging tmpfs"),
                }
            }
        }
        released
    }

    /// Unmounts them all (the worker is stopping), once no restore holds them.
    pub async fn unmount(&self) {
        for slot in &self.slots {
            if let Some(tmpfs) = slot.mount.lock().await.take() {
                if let Err(e) = tmpfs.unmount() {
                    warn!(error = %e, "could not unmount the staging tmpfs");
                }
            }
        }
    }
}

fn mount_fresh(slot: &Slot) -> Result<ImageTmpfs> {
    fresh_mountpoint(&slot.mountpoint)?;
    let tmpfs = ImageTmpfs::mount(&slot.mountpoint, slot.capacity)?;
    info!(mountpoint = %slot.mountpoint.display(), bytes = slot.capacity, "staging tmpfs for whole restores mounted");
    Ok(tmpfs)
}

/// The file [`WholeStaging::warm`] fills; a name no CRIU image file has.
const WARM_FILE: &str = ".warm";

/// Leaves in `dir` only the page files `manifest` is about to overwrite, each cut down to its new
/// size, so that writing the image never needs more room than it takes. A page file it needs
/// under a name `dir` does not hold takes over the largest other file (renamed); everything else
/// (an earlier image's small files and other page files, whatever `criu restore` left) goes.
fn keep_only_paged_files(dir: &Path, manifest: &Manifest) -> Result<()> {
    let paged: Vec<(&str, u64)> = manifest
        .files
        .iter()
        .filter(|f| matches!(f.content, FileContent::Paged(_)))
        .map(|f| (f.name.as_str(), f.size))
        .collect();
    let mut others = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if paged.iter().any(|&(n, _)| n == name) {
            continue;
        }
        if entry.file_type().map_err(|e| Error::io(&path, e))?.is_dir() {
            std::fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        } else {
            let len = entry.metadata().map_err(|e| Error::io(&path, e))?.len();
            others.push((len, path));
        }
    }
    // Largest first, both ways: the largest file the image needs takes over the largest held.
    others.sort_by_key(|(len, _)| std::cmp::Reverse(*len));
    let mut others = others.into_iter();
    let mut missing: Vec<&(&str, u64)> = paged
        .iter()
        .filter(|(name, _)| !dir.join(name).exists())
        .collect();
    missing.sort_by_key(|(_, size)| std::cmp::Reverse(*size));
    for (name, _) in missing {
        let Some((_, from)) = others.next() else {
            break;
        };
        let to = dir.join(name);
        std::fs::rename(&from, &to).map_err(|e| Error::io(&to, e))?;
    }
    for (_, path) in others {
        std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
    }
    for &(name, size) in &paged {
        let path = dir.join(name);
        let file = match std::fs::OpenOptions::new().write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&path, e)),
        };
        let len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        if len > size {
            file.set_len(size).map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}

impl ImageDir {
    pub fn path(&self) -> &Path {
        match self {
            ImageDir::Staged { dir, .. } => dir,
            ImageDir::Own(tmpfs) => tmpfs.path(),
        }
    }

    /// Done with the image: the kept tmpfs goes back for the next restore (its files stay), a
    /// tmpfs of its own is unmounted.
    pub fn release(self) -> Result<()> {
        match self {
            ImageDir::Staged { .. } => Ok(()),
            ImageDir::Own(tmpfs) => tmpfs.unmount(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pagestore::{PageId, PAGE_SIZE};
    use std::time::Duration;
    use testkit::manifest::{file, of_files};

    fn manifest(files: &[(&str, bool)]) -> Manifest {
        of_files(
            files
                .iter()
                .map(|&(name, paged)| {
                    let content = if paged {
                        FileContent::Paged(vec![PageId([1; 32])])
                    } else {
                        FileContent::Inline(vec![1])
                    };
                    file(name, PAGE_SIZE as u64, content)
                })
                .collect(),
        )
    }

    #[test]
    fn an_image_over_its_capacity_is_left_to_a_tmpfs_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let staging = WholeStaging::new(dir.path().join(".whole"), 1 << 20, 4 << 20, 1);
        let image = manifest(&[("pages-1.img", true)]);
        assert!(staging.take(&image, (4 << 20) + 1).is_none());
        assert!(
            !dir.path().join(".whole").exists(),
            "nothing mounted for it"
        );
    }

    #[test]
    fn one_restore_at_a_time_and_only_the_next_images_page_files_are_kept() {
        testkit::require_root();
        let dir = tempfile::tempdir().unwrap();
        let staging = WholeStaging::new(dir.path().join(".whole"), 1 << 20, 1 << 20, 0);
        let first = manifest(&[("inventory.img", false), ("pages-1.img", true)]);
        let taken = staging.take(&first, 0).unwrap();
        let path = taken.path().to_path_buf();
        for name in ["inventory.img", "pages-1.img", "stats-restore"] {
            std::fs::write(path.join(name), b"old").unwrap();
        }
        std::fs::write(path.join("pages-2.img"), vec![1; 2 * PAGE_SIZE]).unwrap();
        assert!(
            staging.take(&first, 0).is_none(),
            "a second restore gets a tmpfs of its own"
        );
        taken.release().unwrap();

        let next = manifest(&[("core-7.img", false), ("pages-2.img", true)]);
        let taken = staging.take(&next, 0).unwrap();
        assert_eq!(taken.path(), path, "the same tmpfs, still mounted");
        let mut left: Vec<String> = std::fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["pages-2.img"]);
        let kept = std::fs::metadata(path.join("pages-2.img")).unwrap().len();
        assert_eq!(
            kept, PAGE_SIZE as u64,
            "cut to its new size before it is written"
        );
        drop(taken);

        // A page file under a new name takes over the largest file held (here the last one's).
        let renamed = manifest(&[("pages-3.img", true)]);
        let taken = staging.take(&renamed, 0).unwrap();
        let left: Vec<String> = std::fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, ["pages-3.img"]);
        drop(taken);
        drop(staging);
    }

    fn mounted(path: &Path) -> bool {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        let path = path.to_string_lossy();
        mounts.lines().any(|l| l.split(' ').nth(1) == Some(&*path))
    }

    #[test]
    fn restores_beside_the_first_take_the_tmpfs_kept_for_small_images_until_unused() {
        testkit::require_root();
        let dir = tempfile::tempdir().unwrap();
        let (first_dir, beside_dir) = (dir.path().join(".whole"), dir.path().join(".whole-1"));
        let staging = WholeStaging::new(first_dir.clone(), 1 << 20, 4 << 20, 1);
        let image = manifest(&[("pages-1.img", true)]);
        let dense = staging.take(&image, 2 << 20).unwrap();
        assert_eq!(dense.path(), first_dir);
        assert!(
            staging.take(&image, 2 << 20).is_none(),
            "a dense image takes only the first"
        );
        let beside = staging.take(&image, 1 << 20).unwrap();
        assert_eq!(beside.path(), beside_dir);
        assert!(staging.take(&image, 0).is_none(), "both held");
        drop(beside);
        drop(dense);

        assert_eq!(
            staging.release_unused(Duration::from_secs(60)),
            0,
            "taken just now"
        );
        assert!(mounted(&beside_dir));
        assert_eq!(staging.release_unused(Duration::ZERO), 1);
        assert!(!mounted(&beside_dir), "the one beside goes when unused");
        assert!(mounted(&first_dir), "the first stays");
        let again = staging.take(&image, 0).unwrap();
        assert_eq!(again.path(), first_dir);
        drop(again);
        drop(staging);
    }

    #[test]
    fn a_warmed_tmpfs_holds_one_file_of_its_size_which_the_first_image_takes_over() {
        testkit::require_root();
        let dir = tempfile::tempdir().unwrap();
        let staging = WholeStaging::new(dir.path().join(".whole"), 2 << 20, 2 << 20, 0);
        staging.warm();
        let warm = dir.path().join(".whole").join(WARM_FILE);
        assert_eq!(std::fs::metadata(&warm).unwrap().len(), 2 << 20);
        let image = manifest(&[("inventory.img", false), ("pages-1.img", true)]);
        let taken = staging.take(&image, 0).unwrap();
        assert!(!warm.exists());
        let kept = std::fs::metadata(taken.path().join("pages-1.img")).unwrap();
        assert_eq!(kept.len(), PAGE_SIZE as u64, "taken over and cut to size");
        drop(taken);
        drop(staging);
    }
}
