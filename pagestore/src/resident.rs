//! What this worker already holds of a list of pages (the memory and local tiers), found and
//! served without touching the cold tier.
//!
//! Two callers need an answer that never waits on the network: the pager's FUSE thread, which
//! answers a read whose pages are all in memory on the spot instead of handing it to the async
//! runtime (a restore makes hundreds of small reads, each of which otherwise pays a task hop),
//! and the worker restoring a small checkpoint whole, which writes its image files out of
//! these tiers (or learns that it cannot) before a plain `criu restore` reads them.

use std::fs::{File, OpenOptions};
use std::io::{IoSlice, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::manifest::{FileContent, FileEntry, Manifest};
use crate::page::{PageId, PageSpan, PAGE_SIZE, ZERO_PAGE};
use crate::store::PageStore;
use crate::tally::TierTally;

/// Pages written per lock of the memory tier by [`PageStore::materialize_resident`] (1 MiB):
/// bounds how long other readers of the tier wait.
const WRITE_CHUNK: usize = 256;

/// Pages of a file whose local-only pages [`PageStore::materialize_resident`] reads into memory
/// on several threads before writing them (16 MiB, a multiple of [`WRITE_CHUNK`]): one at a
/// time, reading, decompressing and checking a page took ~12 µs here, so node's 70 MiB image,
/// unique to its tenant and only on the local disk after its swap-out, took 210-295 ms to write
/// out; the memory tier must hold several windows for this to pay.
const READ_WINDOW: usize = 4096;

/// The fewest local-only pages in a window worth reading on more than one thread.
const PARALLEL_MIN: usize = 256;

/// Pages of an image [`PageStore::bring_resident`] looks up on the local disk before it reads
/// any: a dense tenant's wake-up from the cold tier finds none of its pages there, and walking
/// all of them (node's 17k) cost 5-16 ms before the restore went lazy anyway.
const RESIDENT_SAMPLE: usize = 64;

impl PageStore {
    /// `len` bytes at `offset` of `file` (short at the end of the file) if the file is inline or
    /// every page of the range is in the memory tier (or zero); `None` otherwise, having read
    /// nothing from other tiers. A range inside one page shares the tier's buffer.
    pub fn read_file_at_memory(
        &self,
        file: &FileEntry,
        offset: u64,
        len: usize,
        tally: Option<&TierTally>,
    ) -> Option<Bytes> {
        let Some(span) = PageSpan::within(offset, len as u64, file.size) else {
            return Some(Bytes::new());
        };
        let pages = match &file.content {
            FileContent::Inline(data) => {
                return data
                    .get(span.start() as usize..span.end() as usize)
                    .map(Bytes::copy_from_slice)
            }
            FileContent::Paged(pages) => pages,
        };
        let ids = pages.get(span.pages())?;
        let mut held = Vec::with_capacity(ids.len());
        let mut hits = 0;
        for id in ids {
            if id.is_zero() {
                held.push(Bytes::from_static(&ZERO_PAGE));
            } else {
                held.push(self.hot().get(id)?);
                hits += 1;
            }
        }
        if let Some(t) = tally {
            (0..hits).for_each(|_| t.add_memory());
        }
        Some(span.gather(&held))
    }

    /// Whether every non-zero page of `manifest` is in the memory tier: reading it back then
    /// needs neither disk nor network (a swap-in need not wait for the local tier to fill).
    pub fn in_memory(&self, manifest: &Manifest) -> bool {
        self.hot().contains_all(manifest.non_zero_pages())
    }

    /// How many distinct non-zero pages `manifest` has, and how many of them this worker holds
    /// (memory or local tier; a page the local tier cannot read counts as not held): what a
    /// control plane places a tenant by. Blocking (it looks in the local tier).
    pub fn held_pages(&self, manifest: &Manifest) -> (u64, u64) {
        let ids: std::collections::HashSet<&PageId> = manifest
            .files
            .iter()
            .flat_map(|f| f.pages())
            .filter(|id| !id.is_zero())
            .collect();
        let mut held = 0;
        for id in &ids {
            let in_memory = self.hot().contains(id);
            if in_memory
                || self
                    .local()
                    .is_some_and(|l| matches!(l.get(id), Ok(Some(_))))
            {
                held += 1;
            }
        }
        (ids.len() as u64, held)
    }

    /// Writes the files of `manifest` into `dir` (an existing directory) from the memory and
    /// local tiers only, never the cold tier: `Ok(false)` at the first page on neither, with part
    /// of the image written. Pages in memory were checked when they got there and are written
    /// straight out of the tier (one copy, 1 MiB per lock); pages only on the local disk are
    /// checked against their ids as they are read (a corrupt one is a miss) and brought into
    /// memory first. Page files are sparse: a zero page is a hole.
    ///
    /// A file of the same name already in `dir` (an earlier image's) is overwritten in place and
    /// cut to size, so on tmpfs its memory is used again instead of being freed and allocated
    /// anew; its mode is left as it was. Blocking: call it off the async runtime.
    pub fn materialize_resident(&self, manifest: &Manifest, dir: &Path) -> Result<bool> {
        for file in &manifest.files {
            let path = dir.join(&file.name);
            let io = |e| Error::io(&path, e);
            let (mut out, reused) = open_image_file(&path, file).map_err(io)?;
            match &file.content {
                FileContent::Inline(_) => {}
                FileContent::Paged(pages) => {
                    for (w, window) in pages.chunks(READ_WINDOW).enumerate() {
                        if !self.read_local_into_memory(window) {
                            return Ok(false);
                        }
                        for (n, chunk) in window.chunks(WRITE_CHUNK).enumerate() {
                            let first = w * READ_WINDOW + n * WRITE_CHUNK;
                            if !self
                                .write_resident_chunk(&mut out, file.size, first, chunk, reused)
                                .map_err(io)?
                            {
                                return Ok(false);
                            }
                        }
                    }
                }
            }
        }
        Ok(true)
    }

    /// Reads the pages of `ids` that are only on the local disk into the memory tier, on as
    /// many threads as the machine has cores (at most 4), when there are enough of them and the
    /// tier has room for several such windows; `false` if one is on neither tier (as the
    /// writing would find). Fewer, or no room, and the writing reads them one by one.
    fn read_local_into_memory(&self, ids: &[PageId]) -> bool {
        let hot = self.hot();
        if hot.capacity_pages() < 4 * READ_WINDOW {
            return true;
        }
        let wanted = self.not_in_memory(ids);
        wanted.len() < PARALLEL_MIN || self.read_into_memory(&wanted).is_empty()
    }

    /// The distinct non-zero pages of `ids` the memory tier does not hold.
    fn not_in_memory(&self, ids: &[PageId]) -> Vec<PageId> {
        let mut wanted = self.hot().missing(ids.iter().filter(|id| !id.is_zero()));
        wanted.sort_unstable();
        wanted.dedup();
        wanted
    }

    /// Reads `ids` from the local tier into the memory tier, on as many threads as the machine
    /// has cores (at most 4) when there are [`PARALLEL_MIN`] or more; the ones it does not hold.
    fn read_into_memory(&self, ids: &[PageId]) -> Vec<PageId> {
        let threads = match ids.len() >= PARALLEL_MIN {
            true => std::thread::available_parallelism().map_or(1, |n| n.get().clamp(1, 4)),
            false => 1,
        };
        let missing = std::sync::Mutex::new(Vec::new());
        let read = |part: &[PageId]| {
            for id in part {
                match self.read_path.read_local(id) {
                    Some(page) => self.hot().insert_shared(*id, page),
                    None => missing.lock().unwrap_or_else(|p| p.into_inner()).push(*id),
                }
            }
        };
        match threads {
            1 => read(ids),
            n => std::thread::scope(|scope| {
                for part in ids.chunks(ids.len().div_ceil(n)) {
                    scope.spawn(|| read(part));
                }
            }),
        }
        missing.into_inner().unwrap_or_else(|p| p.into_inner())
    }

    /// Brings every page of `manifest` this worker holds on its local disk into the memory tier
    /// (checked as read) and says which of its pages it holds on neither tier, so that a whole
    /// restore can fetch just those, if they are at most `max_missing`; `None` otherwise, or when
    /// the memory tier is too small to take the image. Before reading any, a sample of
    /// [`RESIDENT_SAMPLE`] pages is looked up on the local disk, and nothing is read when it says
    /// that most are missing, far more than `max_missing` (a dense tenant woken from the cold
    /// tier). Blocking.
    pub fn bring_resident(&self, manifest: &Manifest, max_missing: usize) -> Option<Vec<PageId>> {
        let ids: Vec<PageId> = manifest
            .files
            .iter()
            .flat_map(|f| f.pages())
            .copied()
            .collect();
        let wanted = self.not_in_memory(&ids);
        if wanted.len() * 2 > self.hot().capacity_pages() {
            return None;
        }
        if wanted.len() > max_missing && self.mostly_elsewhere(&wanted, max_missing) {
            return None;
        }
        let missing = self.read_into_memory(&wanted);
        (missing.len() <= max_missing).then_some(missing)
    }

    /// Whether the local tier lacks most of `ids`, and over twice `max_missing` of them, as
    /// [`RESIDENT_SAMPLE`] of them spread over the list tell (all, when there is no local tier).
    fn mostly_elsewhere(&self, ids: &[PageId], max_missing: usize) -> bool {
        let Some(local) = self.local() else {
            return true;
        };
        let step = ids.len().div_ceil(RESIDENT_SAMPLE).max(1);
        let (mut looked, mut lacking) = (0, 0);
        for id in ids.iter().step_by(step) {
            looked += 1;
            if !matches!(local.get(id), Ok(Some(_))) {
                lacking += 1;
            }
        }
        lacking * 2 > looked && ids.len() * lacking / looked > 2 * max_missing
    }

    /// Writes pages `first..first + ids.len()` of a paged file of `size` bytes into `out`
    /// (`reused`: the file held other bytes before); `false` if a page is in neither the memory
    /// nor the local tier.
    fn write_resident_chunk(
        &self,
        out: &mut File,
        size: u64,
        first: usize,
        ids: &[PageId],
        reused: bool,
    ) -> std::io::Result<bool> {
        if reused {
            punch_zero_pages(out, size, first, ids)?;
        }
        let present: Vec<PageId> = ids.iter().filter(|id| !id.is_zero()).copied().collect();
        let lent = self
            .hot()
            .with_pages(&present, |pages| write_pages(out, size, first, ids, pages));
        if let Some(written) = lent {
            return written.map(|()| true);
        }
        // Some are only on the local disk (checked as read): each is brought into memory for the
        // next restore.
        let mut held = Vec::with_capacity(present.len());
        for id in &present {
            let page = self.hot().get(id).or_else(|| {
                let page = self.read_path.read_local(id)?;
                self.hot().insert_shared(*id, page.clone());
                Some(page)
            });
            match page {
                Some(page) => held.push(page),
                None => return Ok(false),
            }
        }
        let pages: Vec<&[u8]> = held.iter().map(|p| &p[..]).collect();
        write_pages(out, size, first, ids, &pages).map(|()| true)
    }
}

/// Opens `file`'s output at `path` to be written over (see
/// [`PageStore::materialize_resident`]): an inline file written whole, a paged file (sparse)
/// cut to size, to be filled by the caller; whether it held bytes before (a reused file, whose
/// zero pages must be punched).
pub(crate) fn open_image_file(path: &Path, file: &FileEntry) -> std::io::Result<(File, bool)> {
    let mut out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(matches!(file.content, FileContent::Inline(_)))
        .mode(file.mode & 0o7777)
        .open(path)?;
    match &file.content {
        FileContent::Inline(data) => {
            out.write_all(data)?;
            Ok((out, false))
        }
        FileContent::Paged(_) => {
            let reused = out.metadata()?.len() > 0;
            out.set_len(file.size)?;
            Ok((out, reused))
        }
    }
}

/// Makes holes of the zero pages among `ids` (pages `first..` of a file of `size` bytes), one
/// call per run, where a reused file may still hold an earlier image's bytes.
pub(crate) fn punch_zero_pages(
    out: &File,
    size: u64,
    first: usize,
    ids: &[PageId],
) -> std::io::Result<()> {
    let mut i = 0;
    while i < ids.len() {
        if !ids[i].is_zero() {
            i += 1;
            continue;
        }
        let start = i;
        while i < ids.len() && ids[i].is_zero() {
            i += 1;
        }
        let offset = ((first + start) * PAGE_SIZE) as u64;
        let len = (((i - start) * PAGE_SIZE) as u64).min(size.saturating_sub(offset));
        // SAFETY: fallocate(2) on an open file descriptor, with integer arguments.
        let rc = unsafe {
            libc::fallocate(
                out.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset as libc::off_t,
                len as libc::off_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Writes the non-zero pages among `ids` (pages `first..` of a file of `size` bytes), whose bytes
/// are `pages` in order, each run of adjacent ones in one vectored write; zero pages stay holes.
fn write_pages(
    out: &mut File,
    size: u64,
    first: usize,
    ids: &[PageId],
    pages: &[&[u8]],
) -> std::io::Result<()> {
    let mut next = pages.iter();
    let mut i = 0;
    while i < ids.len() {
        if ids[i].is_zero() {
            i += 1;
            continue;
        }
        let start = i;
        while i < ids.len() && !ids[i].is_zero() {
            i += 1;
        }
        let offset = ((first + start) * PAGE_SIZE) as u64;
        let mut left = size.saturating_sub(offset);
        let mut run = Vec::with_capacity(i - start);
        for page in next.by_ref().take(i - start) {
            let n = left.min(page.len() as u64) as usize;
            run.push(IoSlice::new(&page[..n]));
            left -= n as u64;
        }
        out.seek(SeekFrom::Start(offset))?;
        let mut slices = &mut run[..];
        while !slices.is_empty() {
            let n = out.write_vectored(slices)?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut slices, n);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::StoreConfig;
    use crate::manifest::testing::{file, of_files, paged_bytes};
    use crate::manifest::FileContent;
    use crate::page::{PageId, PAGE_SIZE};
    use crate::store::PageStore;

    fn page(byte: u8) -> Vec<u8> {
        vec![byte; PAGE_SIZE]
    }

    async fn open(dir: &std::path::Path) -> PageStore {
        PageStore::open(&StoreConfig::embedded(dir)).await.unwrap()
    }

    #[tokio::test]
    async fn memory_reads_answer_only_when_every_page_is_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        let (a, b) = (page(1), page(2));
        let (ida, idb) = (PageId::of(&a), PageId::of(&b));
        let file = file(
            "pages-1.img",
            3 * PAGE_SIZE as u64,
            FileContent::Paged(vec![ida, PageId::ZERO, idb]),
        );
        store.hot().insert(ida, &a);
        let tally = crate::tally::TierTally::default();
        // Page 0 and the zero page are answered; page 2 is not in memory.
        let got = store
            .read_file_at_memory(&file, 100, PAGE_SIZE + 10, Some(&tally))
            .unwrap();
        assert_eq!(&got[..PAGE_SIZE - 100], &a[100..]);
        assert!(got[PAGE_SIZE - 100..].iter().all(|&x| x == 0));
        assert_eq!(tally.counts().memory_bytes, PAGE_SIZE as u64);
        assert!(store
            .read_file_at_memory(&file, 0, 3 * PAGE_SIZE, None)
            .is_none());
        store.hot().insert(idb, &b);
        let all = store
            .read_file_at_memory(&file, 0, 4 * PAGE_SIZE, None)
            .unwrap();
        assert_eq!(all.len(), 3 * PAGE_SIZE, "short at the end of the file");
        assert_eq!(&all[2 * PAGE_SIZE..], &b[..]);
    }

    /// An image most of whose pages are on neither tier (a dense tenant woken from the cold
    /// tier) is turned down from a sample: not one of the pages the local tier does hold is read.
    #[tokio::test]
    async fn an_image_mostly_elsewhere_is_turned_down_without_reading_its_local_pages() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        let ids: Vec<PageId> = (0..1000u32)
            .map(|i| {
                let mut p = page(7);
                p[..4].copy_from_slice(&i.to_le_bytes());
                let id = PageId::of(&p);
                if i % 10 == 0 {
                    let (codec, encoded) = crate::codec::encode(&p);
                    store.local().unwrap().put(&id, codec, &encoded).unwrap();
                }
                id
            })
            .collect();
        let manifest = of_files(vec![file(
            "pages-1.img",
            (ids.len() * PAGE_SIZE) as u64,
            FileContent::Paged(ids.clone()),
        )]);
        assert_eq!(store.bring_resident(&manifest, 100), None, "900 missing");
        assert!(store.hot().is_empty(), "none of the 100 local pages read");
        assert_eq!(
            store.bring_resident(&manifest, 900).map(|m| m.len()),
            Some(900),
            "within the bound, every local page is read and the others named"
        );
        assert_eq!(store.hot().len(), 100);
    }

    /// Over a window of local-only pages, read on several threads: every page lands where it
    /// belongs, and one on neither tier still makes the image incomplete.
    #[tokio::test]
    async fn many_local_only_pages_are_read_on_several_threads_into_place() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        let count = super::READ_WINDOW + super::PARALLEL_MIN;
        let pages: Vec<Vec<u8>> = (0..count)
            .map(|i| {
                let mut p = page((i % 251) as u8);
                p[..8].copy_from_slice(&(i as u64).to_le_bytes());
                p
            })
            .collect();
        let mut ids = Vec::new();
        for p in &pages {
            let id = PageId::of(p);
            let (codec, encoded) = crate::codec::encode(p);
            store.local().unwrap().put(&id, codec, &encoded).unwrap();
            ids.push(id);
        }
        let paged = |ids: Vec<PageId>| {
            of_files(vec![file(
                "pages-1.img",
                (ids.len() * PAGE_SIZE) as u64,
                FileContent::Paged(ids),
            )])
        };
        let out = dir.path().join("image");
        std::fs::create_dir(&out).unwrap();
        let mut with_missing = ids.clone();
        let gone = PageId::of(&page(255));
        with_missing[5] = gone;
        let manifest = paged(with_missing);
        assert!(!store.materialize_resident(&manifest, &out).unwrap());
        assert_eq!(
            store.bring_resident(&manifest, 0),
            None,
            "one page missing is more than none"
        );
        assert_eq!(
            store.bring_resident(&manifest, 1),
            Some(vec![gone]),
            "every other page read into memory, the one on neither tier named"
        );
        assert!(store.hot().contains(&ids[count - 1]));

        let manifest = paged(ids);
        assert!(store.materialize_resident(&manifest, &out).unwrap());
        assert!(std::fs::read(out.join("pages-1.img")).unwrap() == pages.concat());
        assert!(store.in_memory(&manifest));
    }

    #[tokio::test]
    async fn resident_pages_are_written_out_sparse_and_a_corrupt_local_page_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        let (a, b) = (page(1), page(2));
        let (ida, idb, idc) = (PageId::of(&a), PageId::of(&b), PageId::of(&page(3)));
        store.hot().insert(ida, &a);
        let (codec, encoded) = crate::codec::encode(&b);
        store.local().unwrap().put(&idb, codec, &encoded).unwrap();
        // More pages than one write chunk, and a last page cut short by the file size.
        let mut ids = vec![ida; super::WRITE_CHUNK];
        ids.extend([PageId::ZERO, idb, ida]);
        let size = (ids.len() * PAGE_SIZE - 100) as u64;
        let manifest = of_files(vec![
            file("inventory.img", 3, FileContent::Inline(vec![7, 8, 9])),
            file("pages-1.img", size, FileContent::Paged(ids.clone())),
        ]);
        assert!(
            !store.in_memory(&manifest),
            "one page is on the local disk only"
        );
        let out = dir.path().join("image");
        std::fs::create_dir(&out).unwrap();
        assert!(store.materialize_resident(&manifest, &out).unwrap());
        assert_eq!(std::fs::read(out.join("inventory.img")).unwrap(), [7, 8, 9]);
        let want = paged_bytes(&ids, &[(ida, &a), (idb, &b)], size);
        assert!(std::fs::read(out.join("pages-1.img")).unwrap() == want);
        assert!(
            store.hot().contains(&idb),
            "the local page is now in memory"
        );
        assert!(store.in_memory(&manifest), "zero pages need no memory");

        // Another image written over this one: files overwritten in place and cut to size, a
        // zero page where a page was before reads as zeros, a shorter inline file is whole.
        let mut over = manifest.clone();
        over.files[0].content = FileContent::Inline(vec![5]);
        over.files[0].size = 1;
        let ids2 = vec![idb, PageId::ZERO, ida];
        over.files[1].content = FileContent::Paged(ids2);
        over.files[1].size = (3 * PAGE_SIZE) as u64;
        assert!(store.materialize_resident(&over, &out).unwrap());
        assert_eq!(std::fs::read(out.join("inventory.img")).unwrap(), [5]);
        let mut want = b.clone();
        want.extend_from_slice(&[0; PAGE_SIZE]);
        want.extend_from_slice(&a);
        assert!(std::fs::read(out.join("pages-1.img")).unwrap() == want);

        // A local page that does not match its id is a miss: the image is not resident.
        let (codec, encoded) = crate::codec::encode(&a);
        store.local().unwrap().put(&idc, codec, &encoded).unwrap();
        let mut damaged = manifest.clone();
        damaged.files[1].content = FileContent::Paged(vec![ida, idc]);
        let out = dir.path().join("damaged");
        std::fs::create_dir(&out).unwrap();
        assert!(!store.materialize_resident(&damaged, &out).unwrap());
        assert!(!store.hot().contains(&idc));
    }
}
