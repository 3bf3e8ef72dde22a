//! Checking an image directory against its checkpoint (see the module doc of [`super`]): each
//! file's size, each small file's bytes, and each page of a paged file against its id (a zero
//! page against zeros), read back in parts of [`PART`] pages on several threads. In two halves,
//! split by the caller's rule (the store knows no image format): the files a restore interprets
//! ([`Files::AllBut`] the page files), before it reads them, and the page files ([`Files::Only`]),
//! whose bytes it only copies into the restored memory, beside it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::manifest::{FileContent, Manifest};
use crate::page::PAGE_SIZE;

/// Pages a thread reads and checks at a time (256 KiB).
const PART: usize = 64;

/// Which files of an image a check reads, by name.
#[derive(Clone, Copy)]
pub(super) enum Files {
    /// Every file but those the rule names.
    AllBut(fn(&str) -> bool),
    /// Only those the rule names.
    Only(fn(&str) -> bool),
}

impl Files {
    fn holds(self, name: &str) -> bool {
        match self {
            Files::AllBut(rule) => !rule(name),
            Files::Only(rule) => rule(name),
        }
    }
}

/// Why an image did not pass: it is not the checkpoint's, or a file could not be read.
pub(super) enum Failed {
    Bad(String),
    Io(PathBuf, std::io::Error),
}

/// Checks `which` files of the image of `manifest` in `dir`: the first difference, as an error.
pub(super) fn image(manifest: &Manifest, dir: &Path, which: Files) -> Result<(), Failed> {
    let mut files = Vec::with_capacity(manifest.files.len());
    for entry in &manifest.files {
        if !which.holds(&entry.name) {
            files.push(None);
            continue;
        }
        let path = dir.join(&entry.name);
        let file = std::fs::File::open(&path).map_err(|e| Failed::Io(path.clone(), e))?;
        let len = file
            .metadata()
            .map_err(|e| Failed::Io(path.clone(), e))?
            .len();
        if len != entry.size {
            return Err(Failed::Bad(format!(
                "{} holds {len} bytes, not {}",
                entry.name, entry.size
            )));
        }
        if let FileContent::Inline(data) = &entry.content {
            let read = std::fs::read(&path).map_err(|e| Failed::Io(path.clone(), e))?;
            if read != *data {
                return Err(Failed::Bad(format!(
                    "{} is not the checkpoint's",
                    entry.name
                )));
            }
        }
        files.push(Some(file));
    }
    let places = &places(manifest, &files);
    let files = &files;
    // Beside a restore, the check leaves it a core (CRIU restores memory on one thread): on two
    // cores, Python's 30k-page dict woke in p50 96.2 ms (86.2 the first time) with one thread,
    // 100.6 (92.3) with two, 10 runs each (bench/results/restore-kept-dump).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get().clamp(1, 4));
    let threads = match which {
        Files::AllBut(_) => cores,
        Files::Only(_) => (cores - 1).max(1),
    };
    on_parts(places.len(), threads, || {
        let mut buf = vec![0u8; PART * PAGE_SIZE];
        move |part| check_part(manifest, files, part_of(places, part), &mut buf)
    })
}

/// Reads the pages of `places` back from `files`, run by run of neighbouring pages, and checks
/// each against its id.
fn check_part(
    manifest: &Manifest,
    files: &[Option<std::fs::File>],
    places: &[(usize, usize)],
    buf: &mut [u8],
) -> Result<(), Failed> {
    use std::os::unix::fs::FileExt;
    let mut n = 0;
    while n < places.len() {
        let (f, first) = places[n];
        let mut end = n + 1;
        while end < places.len() && places[end] == (f, first + (end - n)) {
            end += 1;
        }
        let entry = &manifest.files[f];
        let offset = (first * PAGE_SIZE) as u64;
        let len = (((end - n) * PAGE_SIZE) as u64).min(entry.size.saturating_sub(offset)) as usize;
        let run = &mut buf[..(end - n) * PAGE_SIZE];
        // A last page cut short by the file's size was named with zeros after its end.
        run[len..].fill(0);
        let Some(file) = &files[f] else {
            return Err(Failed::Bad(format!("{} was not opened", entry.name)));
        };
        file.read_exact_at(&mut run[..len], offset)
            .map_err(|_| Failed::Bad(format!("{} is cut short", entry.name)))?;
        for (k, page) in run.chunks_exact(PAGE_SIZE).enumerate() {
            let id = &entry.pages()[first + k];
            let ok = match id.is_zero() {
                true => page.iter().all(|&b| b == 0),
                false => id.matches(page),
            };
            if !ok {
                return Err(Failed::Bad(format!(
                    "page {} of {} does not match its id {id}",
                    first + k,
                    entry.name
                )));
            }
        }
        n = end;
    }
    Ok(())
}

/// Every page of `manifest`'s paged files among `files` (those opened): its file's index and
/// page index, in file order.
fn places(manifest: &Manifest, files: &[Option<std::fs::File>]) -> Vec<(usize, usize)> {
    manifest
        .files
        .iter()
        .enumerate()
        .filter(|(f, _)| files[*f].is_some())
        .flat_map(|(f, file)| (0..file.pages().len()).map(move |i| (f, i)))
        .collect()
}

/// The places of part `part`.
fn part_of(places: &[(usize, usize)], part: usize) -> &[(usize, usize)] {
    &places[part * PART..((part + 1) * PART).min(places.len())]
}

/// Runs a worker made by `worker` (its buffers its own) on each part of `pages` pages, on
/// `threads` threads, each taking the next part, until every part is done or one fails; the
/// first failure.
fn on_parts<W, F>(pages: usize, threads: usize, worker: W) -> Result<(), Failed>
where
    W: Fn() -> F + Sync,
    F: FnMut(usize) -> Result<(), Failed>,
{
    let parts = pages.div_ceil(PART);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed: Mutex<Option<Failed>> = Mutex::new(None);
    let work = || {
        let mut one = worker();
        loop {
            let part = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if part >= parts || failed.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
                return;
            }
            if let Err(e) = one(part) {
                failed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert(e);
                return;
            }
        }
    };
    match threads.min(parts) {
        0 | 1 => work(),
        n => std::thread::scope(|scope| {
            for _ in 0..n {
                scope.spawn(work);
            }
        }),
    }
    match failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
