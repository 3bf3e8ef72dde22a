//! Write-behind for the local tier: the pages of packs an ingest has made durable are cached by
//! one background thread, so that caching them (an engine write per pack) is off the path to the
//! commit.
//!
//! It is safe because the local tier is only a cache: a pack is queued only after it is durable
//! in the cold tier and its pages are in the catalog, so a read that comes before its pages are
//! cached misses here and reads them from the cold tier; a page read from the local tier is
//! checked against its hash like any other. The queue holds at most [`QUEUE_PACKS`] packs
//! (64 MiB): an ingest that outruns the engine waits for it rather than holding whole images in
//! memory. [`Filler::wait_idle`] says when everything queued is cached (the CLI waits for it
//! before it exits, the benchmark reports it apart from the commit).
//!
//! The thread waits while an ingest is under way (until its commit) unless the queue is full,
//! and runs at the lowest CPU priority (nice 19): on a worker's few cores, naming, compressing
//! and uploading the pages of a swap-out, and the tenants, come first; the cache fills in the
//! time they leave. Dropping the filler drains the queue and joins the thread, so that the local
//! tier is released when its store is dropped.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex};

use tracing::warn;

use super::LocalTier;
use crate::pack::PackEntry;

/// Packs queued for caching at most (each up to [`crate::pack::TARGET_PACK_BYTES`]).
pub const QUEUE_PACKS: usize = 8;

/// Pages cached per engine write (up to 1 MiB): small enough that an ingest starting meanwhile
/// waits for at most one, large enough to keep the engine's per-write cost small.
const BATCH_PAGES: usize = 256;

/// One durable pack whose pages are to be cached.
struct Job {
    pack: bytes::Bytes,
    entries: Vec<PackEntry>,
}

/// Packs queued or being cached, and ingests under way; the condition is signalled when either
/// changes.
#[derive(Default)]
struct Pending {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    packs: usize,
    ingests: usize,
    /// Callers of [`Filler::wait_idle`]: they want the queue drained now.
    draining: usize,
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
    tx: Mutex<Option<SyncSender<Job>>>,
    pending: Arc<Pending>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Filler {
    /// Starts the thread that caches queued packs in `local`.
    pub fn start(local: Arc<dyn LocalTier>) -> Filler {
        let (tx, rx) = sync_channel(QUEUE_PACKS);
        let pending = Arc::new(Pending::default());
        let worker_pending = pending.clone();
        let spawned = std::thread::Builder::new()
            .name("local-fill".into())
            .spawn(move || run(local.as_ref(), rx, &worker_pending));
        let (tx, thread) = match spawned {
            Ok(t) => (Some(tx), Some(t)),
            Err(e) => {
                warn!(error = %e, "no local-tier fill thread; ingested pages are not cached");
                (None, None)
            }
        };
        Filler {
            tx: Mutex::new(tx),
            pending,
            thread: Mutex::new(thread),
        }
    }

    /// Queues the pages of a durable pack (`entries` index `pack`); blocks while the queue is
    /// full. Call it from a blocking thread.
    pub fn submit(&self, pack: bytes::Bytes, entries: Vec<PackEntry>) {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(tx) = tx else { return };
        self.pending.update(|s| s.packs += 1);
        if tx.send(Job { pack, entries }).is_err() {
            self.pending.update(|s| s.packs = s.packs.saturating_sub(1));
        }
    }

    /// Marks an ingest under way until the guard is dropped (at its commit).
    pub fn ingest_started(&self) -> IngestGuard {
        self.pending.update(|s| s.ingests += 1);
        IngestGuard {
            pending: self.pending.clone(),
        }
    }

    /// Blocks until every pack queued so far is cached (or failed to be).
    pub fn wait_idle(&self) {
        self.pending.update(|s| s.draining += 1);
        self.pending.wait_until(|s| s.packs == 0);
        self.pending.update(|s| s.draining -= 1);
    }
}

impl Drop for Filler {
    fn drop(&mut self) {
        drop(self.tx.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

impl Pending {
    fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()));
        self.changed.notify_all();
    }

    fn wait_until(&self, ready: impl Fn(&State) -> bool) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while !ready(&state) {
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }
}

fn run(local: &dyn LocalTier, rx: Receiver<Job>, pending: &Pending) {
    crate::blocking::lowest_priority();
    while let Ok(job) = rx.recv() {
        let pages: Vec<_> = job
            .entries
            .iter()
            // Ingest's packs hold pages encoded alone; a zstd frame is never cached as it is.
            .filter(|e| e.codec.is_single_page())
            .filter_map(|e| {
                let raw = job
                    .pack
                    .get(e.offset as usize..e.offset as usize + e.len as usize)?;
                Some((e.id, e.codec, raw))
            })
            .collect();
        for batch in pages.chunks(BATCH_PAGES) {
            // After the commit, or now if the queue is full (the ingest is then waiting for room)
            // or someone waits for it to drain. Asked again before every batch, so that an
            // ingest that starts while a pack is being cached has the machine back within one.
            pending.wait_until(|s| s.ingests == 0 || s.packs >= QUEUE_PACKS || s.draining > 0);
            if let Err(e) = local.put_many(batch) {
                warn!(error = %e, pages = batch.len(), "could not cache ingested pages locally");
            }
        }
        pending.update(|s| s.packs = s.packs.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Codec;
    use crate::config::LocalEngine;
    use crate::pack::PackBuilder;
    use crate::page::PageId;

    #[test]
    fn queued_packs_are_cached_by_the_time_wait_idle_returns() {
        let dir = tempfile::tempdir().unwrap();
        let local: Arc<dyn LocalTier> =
            Arc::from(super::super::open_owned(dir.path(), LocalEngine::Fjall, 1 << 30).unwrap());
        let filler = Filler::start(local.clone());
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
        let dir = tempfile::tempdir().unwrap();
        let local: Arc<dyn LocalTier> =
            Arc::from(super::super::open_owned(dir.path(), LocalEngine::Fjall, 1 << 30).unwrap());
        let filler = Filler::start(local.clone());
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
        // A full queue is drained even while the ingest goes on.
        let (data, entries) = pack(100);
        filler.submit(data.into(), entries);
        filler.wait_idle();
        assert_eq!(local.usage().unwrap().0, u64::from(QUEUE_PACKS as u8));
        drop(ingest);
    }
}
