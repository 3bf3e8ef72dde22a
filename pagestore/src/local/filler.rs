//! Write-behind for the local tier: pages that are durable in the cold tier are cached by one
//! background thread, off the path that brought them: an ingest's new packs (so that caching
//! them, an engine write per pack, is off the path to the commit) and the pages a read fetched
//! from the cold tier or a peer (so that re-encoding and writing them is off a restore's path:
//! a node tenant's 7k-page restore set waited 65-75 ms for it, a Python one's 20k pages
//! 230-285 ms, before `criu restore` could start).
//!
//! It is safe because the local tier is only a cache: pages are queued only once they are
//! durable in the cold tier and in the catalog, so a read that comes before they are cached
//! misses here and finds them in memory (fetched pages are there already) or reads them from
//! the cold tier; a page read from the local tier is checked against its hash like any other.
//!
//! The queue is bounded ([`QUEUE_PACKS`] ingested packs, [`QUEUE_BYTES`] in all): an ingest
//! that outruns the engine waits for room rather than holding whole images in memory, and a
//! read whose pages find the queue full caches them itself ([`Filler::offer`] hands them back).
//! [`Filler::wait_idle`] says when everything queued is cached (the CLI waits for it before it
//! exits, the benchmark reports it apart from the commit).
//!
//! The thread waits while an ingest is under way (until its commit) unless the queue is full,
//! and runs at the lowest CPU priority (nice 19): on a worker's few cores, naming, compressing
//! and uploading the pages of a swap-out, restoring a tenant, and the tenants, come first; the
//! cache fills in the time they leave. Dropping the filler drains the queue and joins the
//! thread, so that the local tier is released when its store is dropped.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};

use bytes::Bytes;
use tracing::warn;

use super::LocalTier;
use crate::codec::{self, Codec};
use crate::pack::PackEntry;
use crate::page::{PageId, PAGE_SIZE};

/// Ingested packs queued for caching at most (each up to [`crate::pack::TARGET_PACK_BYTES`]).
pub const QUEUE_PACKS: usize = 8;

/// Bytes queued at most, packs and fetched pages together (fetched pages count as 4 KiB each,
/// though most share their bytes with the memory tier).
pub const QUEUE_BYTES: usize = 64 << 20;

/// Pages cached per engine write (up to 1 MiB): small enough that an ingest starting meanwhile
/// waits for at most one, large enough to keep the engine's per-write cost small.
const BATCH_PAGES: usize = 256;

/// A page fetched from the cold tier or a peer, to be cached.
pub enum FetchedPage {
    /// Encoded as the local tier keeps it (a page stored alone).
    Encoded(PageId, Codec, Bytes),
    /// Decoded (a page of a zstd frame, which the local tier never holds): encoded alone by
    /// the fill thread.
    Decoded(PageId, Bytes),
}

impl FetchedPage {
    pub fn id(&self) -> PageId {
        match self {
            FetchedPage::Encoded(id, ..) | FetchedPage::Decoded(id, _) => *id,
        }
    }
}

/// Pages to be cached.
enum Job {
    /// The pages of an ingest's durable pack (`entries` index `pack`).
    Pack {
        pack: Bytes,
        entries: Vec<PackEntry>,
    },
    /// Pages a read fetched.
    Fetched(Vec<FetchedPage>),
}

impl Job {
    fn bytes(&self) -> usize {
        match self {
            Job::Pack { pack, .. } => pack.len(),
            Job::Fetched(pages) => pages.len() * PAGE_SIZE,
        }
    }

    fn is_pack(&self) -> bool {
        matches!(self, Job::Pack { .. })
    }
}

/// The queue, the job being cached, and ingests under way; the condition is signalled when any
/// of them changes.
#[derive(Default)]
struct Pending {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    /// Packs and bytes queued or being cached.
    packs: usize,
    bytes: usize,
    /// A job is being cached.
    busy: bool,
    ingests: usize,
    /// Callers of [`Filler::wait_idle`]: they want the queue drained now.
    draining: usize,
    /// The filler is being dropped: the thread drains the queue and exits.
    closed: bool,
}

impl State {
    fn full(&self) -> bool {
        self.packs >= QUEUE_PACKS || self.bytes >= QUEUE_BYTES
    }

    /// Nothing queued and nothing being cached.
    fn idle(&self) -> bool {
        self.queue.is_empty() && !self.busy
    }

    fn push(&mut self, job: Job) {
        self.packs += usize::from(job.is_pack());
        self.bytes += job.bytes();
        self.queue.push_back(job);
    }
}

/// Held by an ingest until it has committed: meanwhile the fill thread leaves the CPU and the
/// disk to it, unless the queue is full.
pub struct IngestGuard {
    pending: Arc<Pending>,
}

impl Drop for IngestGuard {
    fn drop(&mut self) {
        self.pending
            .update(|s| s.ingests = s.ingests.saturating_sub(1));
    }
}

pub struct Filler {
    pending: Arc<Pending>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Filler {
    /// Starts the thread that caches queued pages in `local`.
    pub fn start(local: Arc<dyn LocalTier>) -> Filler {
        let pending = Arc::new(Pending::default());
        let worker_pending = pending.clone();
        let spawned = std::thread::Builder::new()
            .name("local-fill".into())
            .spawn(move || run(local.as_ref(), &worker_pending));
        let thread = match spawned {
            Ok(t) => Some(t),
            Err(e) => {
                warn!(error = %e, "no local-tier fill thread; pages are cached by their readers, ingested ones not at all");
                pending.update(|s| s.closed = true);
                None
            }
        };
        Filler {
            pending,
            thread: Mutex::new(thread),
        }
    }

    /// Queues the pages of a durable pack (`entries` index `pack`); blocks while the queue is
    /// full. Call it from a blocking thread.
    pub fn submit(&self, pack: Bytes, entries: Vec<PackEntry>) {
        let mut state = self.pending.wait_until(|s| !s.full() || s.closed);
        if state.closed {
            return;
        }
        state.push(Job::Pack { pack, entries });
        drop(state);
        self.pending.changed.notify_all();
    }

    /// Queues pages a read fetched, unless the queue is full (or there is no thread): then
    /// they are handed back, for the reader to cache itself. Never blocks.
    pub fn offer(&self, pages: Vec<FetchedPage>) -> Result<(), Vec<FetchedPage>> {
        if pages.is_empty() {
            return Ok(());
        }
        let mut state = self.pending.lock();
        if state.full() || state.closed {
            return Err(pages);
        }
        state.push(Job::Fetched(pages));
        drop(state);
        self.pending.changed.notify_all();
        Ok(())
    }

    /// Marks an ingest under way until the guard is dropped (at its commit).
    pub fn ingest_started(&self) -> IngestGuard {
        self.pending.update(|s| s.ingests += 1);
        IngestGuard {
            pending: self.pending.clone(),
        }
    }

    /// Whether pages are queued or being cached now (what [`Filler::wait_idle`] waits for).
    pub fn filling(&self) -> bool {
        !self.pending.lock().idle()
    }

    /// Blocks until every page queued so far is cached (or failed to be).
    pub fn wait_idle(&self) {
        self.drain_until(State::idle);
    }

    /// Blocks until the pages of every pack queued so far are cached (or failed to be); fetched
    /// pages queued after them may still wait (they are in memory already).
    pub fn wait_packs(&self) {
        self.drain_until(|s| s.packs == 0);
    }

    /// Has the thread go on even during an ingest until `done`.
    fn drain_until(&self, done: impl Fn(&State) -> bool) {
        self.pending.update(|s| s.draining += 1);
        drop(self.pending.wait_until(done));
        self.pending.update(|s| s.draining -= 1);
    }
}

impl Drop for Filler {
    fn drop(&mut self) {
        self.pending.update(|s| s.closed = true);
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.lock());
        self.changed.notify_all();
    }

    fn wait_until(&self, ready: impl Fn(&State) -> bool) -> std::sync::MutexGuard<'_, State> {
        let mut state = self.lock();
        while !ready(&state) {
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        state
    }
}

/// Caches a read's fetched pages in the local tier itself, in one engine write (what a reader
/// does when the queue is full); a failure is logged (the local tier is a cache).
pub(crate) fn cache_fetched(local: &dyn LocalTier, pages: &[FetchedPage]) {
    let encoded: Vec<(PageId, Codec, Bytes)> = pages.iter().map(encoded_alone).collect();
    put_encoded(local, &encoded);
}

/// Writes encoded pages in one engine write; a failure is logged (the local tier is a cache).
fn put_encoded(local: &dyn LocalTier, pages: &[(PageId, Codec, Bytes)]) {
    let batch: Vec<(PageId, Codec, &[u8])> = pages
        .iter()
        .map(|(id, codec, data)| (*id, *codec, data.as_ref()))
        .collect();
    if let Err(e) = local.put_many(&batch) {
        warn!(pages = batch.len(), error = %e, "could not cache pages in the local tier");
    }
}

fn encoded_alone(page: &FetchedPage) -> (PageId, Codec, Bytes) {
    match page {
        FetchedPage::Encoded(id, codec, data) => (*id, *codec, data.clone()),
        FetchedPage::Decoded(id, page) => {
            let (codec, data) = codec::encode(page);
            (*id, codec, Bytes::from(data))
        }
    }
}

fn run(local: &dyn LocalTier, pending: &Pending) {
    crate::blocking::lowest_priority();
    loop {
        let job = {
            let mut state = pending.wait_until(|s| !s.queue.is_empty() || s.closed);
            let Some(job) = state.queue.pop_front() else {
                // Closed, and nothing left.
                return;
            };
            state.busy = true;
            job
        };
        let (packs, bytes) = (usize::from(job.is_pack()), job.bytes());
        let pages: Vec<(PageId, Codec, Bytes)> = match job {
            Job::Pack { pack, entries } => entries
                .iter()
                // Ingest's packs hold pages encoded alone; a zstd frame is never cached as it is.
                .filter(|e| e.codec.is_single_page())
                .filter_map(|e| {
                    let at = e.offset as usize..e.offset as usize + e.len as usize;
                    (at.end <= pack.len()).then(|| (e.id, e.codec, pack.slice(at)))
                })
                .collect(),
            Job::Fetched(pages) => pages.iter().map(encoded_alone).collect(),
        };
        for batch in pages.chunks(BATCH_PAGES) {
            // After the commit, or now if the queue is full (an ingest is then waiting for room)
            // or someone waits for it to drain. Asked again before every batch, so that an
            // ingest that starts while a pack is being cached has the machine back within one.
            drop(pending.wait_until(|s| s.ingests == 0 || s.full() || s.draining > 0 || s.closed));
            put_encoded(local, batch);
        }
        pending.update(|s| {
            s.busy = false;
            s.packs -= packs;
            s.bytes -= bytes;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Codec;
    use crate::config::LocalEngine;
    use crate::pack::PackBuilder;
    use crate::page::PageId;

    /// A filler over an empty fjall tier in a temporary directory (dropped last).
    fn filler_on_a_fresh_tier() -> (tempfile::TempDir, Arc<dyn LocalTier>, Filler) {
        let dir = tempfile::tempdir().unwrap();
        let local: Arc<dyn LocalTier> =
            Arc::from(super::super::open_owned(dir.path(), LocalEngine::Fjall, 1 << 30).unwrap());
        let filler = Filler::start(local.clone());
        (dir, local, filler)
    }

    #[test]
    fn queued_packs_are_cached_by_the_time_wait_idle_returns() {
        let (_dir, local, filler) = filler_on_a_fresh_tier();
        let mut ids = Vec::new();
        for p in 0..(QUEUE_PACKS as u8 * 2) {
            let mut b = PackBuilder::new();
            for i in 0..50u8 {
                let mut key = [7u8; 32];
                (key[0], key[1]) = (p, i);
                let id = PageId(key);
                b.push(id, Codec::Raw, &[i; 64]);
                ids.push((id, i));
            }
            let (_, data, entries) = b.finish();
            filler.submit(data.into(), entries);
        }
        filler.wait_idle();
        for (id, i) in ids {
            assert_eq!(local.get(&id).unwrap(), Some((Codec::Raw, vec![i; 64])));
        }
        assert_eq!(
            local.usage().unwrap().0,
            u64::from(QUEUE_PACKS as u8 * 2) * 50
        );
    }

    #[test]
    fn nothing_is_cached_while_an_ingest_is_under_way_unless_the_queue_is_full() {
        let (_dir, local, filler) = filler_on_a_fresh_tier();
        assert!(!filler.filling(), "nothing queued");
        let pack = |p: u8| {
            let mut b = PackBuilder::new();
            b.push(PageId([p; 32]), Codec::Raw, &[p; 64]);
            let (_, data, entries) = b.finish();
            (data, entries)
        };
        let ingest = filler.ingest_started();
        for p in 0..QUEUE_PACKS as u8 - 1 {
            let (data, entries) = pack(p);
            filler.submit(data.into(), entries);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert_eq!(local.usage().unwrap().0, 0, "cached before the commit");
        assert!(filler.filling(), "packs queued: still filling");
        // A full queue is drained even while the ingest goes on.
        let (data, entries) = pack(100);
        filler.submit(data.into(), entries);
        filler.wait_idle();
        assert_eq!(local.usage().unwrap().0, u64::from(QUEUE_PACKS as u8));
        assert!(!filler.filling(), "everything queued is cached");
        drop(ingest);
    }

    #[test]
    fn fetched_pages_are_cached_behind_and_a_full_queue_hands_them_back() {
        let (_dir, local, filler) = filler_on_a_fresh_tier();
        let page = |i: u32| {
            let mut data = vec![0u8; PAGE_SIZE];
            data[..4].copy_from_slice(&i.to_le_bytes());
            (PageId::of(&data), Bytes::from(data))
        };
        // Pages of a zstd frame come decoded and are encoded by the thread; others as they are.
        let (a, a_page) = page(1);
        let (b, b_page) = page(2);
        let (b_codec, b_encoded) = codec::encode(&b_page);
        let ingest = filler.ingest_started();
        let offered = filler.offer(vec![
            FetchedPage::Decoded(a, a_page.clone()),
            FetchedPage::Encoded(b, b_codec, Bytes::from(b_encoded.clone())),
        ]);
        assert!(offered.is_ok());
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(local.usage().unwrap().0, 0, "cached during an ingest");
        drop(ingest);
        filler.wait_idle();
        assert_eq!(local.get(&a).unwrap(), Some(codec::encode(&a_page)));
        assert_eq!(local.get(&b).unwrap(), Some((b_codec, b_encoded)));

        // A queue at its bound takes no more: the reader caches them itself.
        let (c, c_page) = page(3);
        let many = QUEUE_BYTES / PAGE_SIZE;
        let ingest = filler.ingest_started();
        let big: Vec<FetchedPage> = (0..many as u32)
            .map(|i| {
                let (id, data) = page(1000 + i);
                FetchedPage::Decoded(id, data)
            })
            .collect();
        assert!(filler.offer(big).is_ok());
        let refused = filler
            .offer(vec![FetchedPage::Decoded(c, c_page.clone())])
            .expect_err("a full queue took more");
        cache_fetched(local.as_ref(), &refused);
        assert_eq!(local.get(&c).unwrap(), Some(codec::encode(&c_page)));
        drop(ingest);
        filler.wait_idle();
        assert_eq!(local.usage().unwrap().0, many as u64 + 3);
    }

    #[test]
    fn wait_packs_returns_once_the_packs_are_cached() {
        let (_dir, local, filler) = filler_on_a_fresh_tier();
        let ingest = filler.ingest_started();
        let mut b = PackBuilder::new();
        let id = PageId([9; 32]);
        b.push(id, Codec::Raw, &[9; 64]);
        let (_, data, entries) = b.finish();
        filler.submit(data.into(), entries);
        // Waited for during the ingest: the thread goes on for it.
        filler.wait_packs();
        assert_eq!(local.get(&id).unwrap(), Some((Codec::Raw, vec![9; 64])));
        drop(ingest);
    }
}
