//! The store's gc on a schedule, run by the worker itself (`[gc] every_ms`, a day by default), so
//! that the pages of checkpoints retention dropped stop costing cold-tier bytes without an
//! operator's cron job.
//!
//! A gc runs beside ingests and never holds a swap-out up ([`pagestore::gc`]); here it also runs
//! its CPU work at nice 19 and pauses before each pack while a swap runs (at most 30 s a pack), so
//! that its cold-tier traffic yields to the swaps'. One at a time: it is due `every_ms` after
//! the store's last gc by *any* process (read from the store's record), so the workers sharing a
//! cold tier run one gc per interval between them, and `pico store gc` counts too. A gc that
//! finds another gc or a recompression running is tried again a minute later.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pagestore::gc::GcRun;
use pagestore::Error as StoreError;
use tracing::{info, warn};

use crate::host::Worker;

/// How soon a gc that found the store busy (another gc, a recompression) or failed is tried
/// again, and how often, at most, the store's record is read while waiting.
const RETRY: Duration = Duration::from_secs(60);
const RECHECK_MAX: Duration = Duration::from_secs(600);

/// How long a stopping worker waits for its gc to give its lock back.
const STOP_WAIT: Duration = Duration::from_secs(30);

/// The running schedule.
pub(crate) struct ScheduledGc {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl ScheduledGc {
    /// Stops it: a gc under way gives its lock back (it deletes nothing it has not replaced).
    /// Not aborted, or its lock would outlive it: a re-executed worker keeps its pid.
    pub(crate) async fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        let abort = self.task.abort_handle();
        if tokio::time::timeout(STOP_WAIT, self.task).await.is_err() {
            warn!("the scheduled gc did not stop in time; its lock stays until it is stale");
            abort.abort();
        }
    }
}

/// Starts the schedule, unless `[gc] every_ms` is 0.
pub(crate) fn start(worker: Arc<Worker>) -> Option<ScheduledGc> {
    let every = worker.store.config().gc.every_ms;
    if every == 0 {
        return None;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn(run(worker, every, stop.clone()));
    Some(ScheduledGc { stop, task })
}

/// Sleeps `d`, or less once `stop` is set; whether to go on.
async fn nap(d: Duration, stop: &AtomicBool) -> bool {
    let until = tokio::time::Instant::now() + d;
    while !stop.load(Ordering::SeqCst) {
        let now = tokio::time::Instant::now();
        if now >= until {
            return true;
        }
        tokio::time::sleep((until - now).min(Duration::from_millis(500))).await;
    }
    false
}

async fn run(worker: Arc<Worker>, every_ms: u64, stop: Arc<AtomicBool>) {
    let started_ms = pagestore::clock::now_ms();
    let retry = Duration::from_millis(every_ms).min(RETRY);
    loop {
        let last = match worker.store.last_gc().await {
            Ok(last) => last.map(|r| r.finished_ms),
            Err(e) => {
                warn!(error = %e, "cannot read the store's last gc; asking again later");
                if !nap(retry, &stop).await {
                    return;
                }
                continue;
            }
        };
        if let Some(ms) = last {
            worker.metrics.store_gc_seen(ms);
        }
        let due_ms = next_due(last, started_ms, every_ms);
        let now = pagestore::clock::now_ms();
        if now < due_ms {
            // Read the record again now and then: another process may run one meanwhile.
            let wait = Duration::from_millis(due_ms - now).min(RECHECK_MAX);
            if !nap(wait, &stop).await {
                return;
            }
            continue;
        }
        let swapping = || worker.is_swapping();
        let gc = GcRun {
            background: true,
            busy: Some(&swapping),
            stop: Some(&stop),
            ..GcRun::default()
        };
        match worker.store.gc_with(&gc).await {
            Ok(r) => {
                worker.metrics.gc_ended(Some(&r));
                info!(
                    deleted = r.packs_deleted,
                    freed = r.freed_bytes(),
                    ms = r.elapsed_ms,
                    "scheduled gc done"
                );
                // Packs ingested while it ran are still in ingest's fast encoding.
                worker.store.recompress_behind();
            }
            Err(StoreError::Busy { what, holder }) => {
                info!(
                    what,
                    holder, "scheduled gc: the store is busy; trying again soon"
                );
            }
            Err(StoreError::Stopped(_)) => return,
            Err(e) => {
                worker.metrics.gc_ended(None);
                warn!(error = %e, "scheduled gc failed; trying again soon");
            }
        }
        if !nap(retry, &stop).await {
            return;
        }
    }
}

/// When the next gc is due: `every_ms` after the store's last one, or after this worker started
/// when the store has none yet.
fn next_due(last_ms: Option<u64>, started_ms: u64, every_ms: u64) -> u64 {
    last_ms.unwrap_or(started_ms).saturating_add(every_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_an_interval_after_the_stores_last_gc_or_the_start() {
        assert_eq!(next_due(None, 1_000, 500), 1_500);
        assert_eq!(next_due(Some(2_000), 1_000, 500), 2_500);
        // A gc long ago (or by another process while this one was down): due at once.
        assert!(next_due(Some(10), 1_000_000, 500) < 1_000_000);
    }
}
