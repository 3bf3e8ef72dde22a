//! Checkpoints of a running tenant (`checkpoint_every`). A busy tenant never idles, so its only
//! checkpoint would be the one of its last sleep, and a worker that dies would lose all it did
//! since; with a checkpoint every interval it loses at most that much (the hub restores the
//! newest one elsewhere). CRIU dumps the tenant and leaves it running (`--leave-running`); the
//! dump, with the tenant's record and files, is ingested as its newest generation, as a
//! swap-out's would be.
//!
//! The tenant is paused for the dump (its memory is copied out: tens of milliseconds for a small
//! one, more for a large heap), and new connections to it wait while the checkpoint is committed
//! (its record is held, as during a swap): so it is off by default, per tenant. A tenant is
//! checkpointed only when a byte crossed its connections since its newest durable state (its
//! last checkpoint, or its wake-up, which restored one).

use std::sync::atomic::Ordering;
use std::time::Instant;

use tracing::{debug, info};

use crate::error::{Error, Result};
use crate::host::{TenantSlot, Worker};
use crate::tenant::TenantState;

impl Worker {
    /// Checkpoints `slot`'s tenant if it runs, leaving it running. `Ok(false)` when there was
    /// nothing to do (not running, or a lazy restore still filling it in).
    pub(crate) async fn checkpoint_running(&self, slot: &TenantSlot) -> Result<bool> {
        // Cut off from the hub, the tenant may be another worker's by now: no checkpoint.
        self.fence.check()?;
        let _permit = self.swap_slots.acquire().await.ok();
        let mut rt = slot.runtime.lock().await;
        let (TenantState::Running, Some(pid)) = (rt.info.state, rt.info.pid) else {
            return Ok(false);
        };
        if rt.restoring.as_ref().is_some_and(|r| !r.is_finished()) {
            // Its memory is still coming in: a dump now would not be consistent.
            debug!(tenant = %slot.name, "still being filled in: checkpoint later");
            return Ok(false);
        }
        let started = Instant::now();
        let staging = self.config.staging_dir.join(format!(
            "{}-live-{}",
            slot.name,
            pagestore::clock::now_ms()
        ));
        crate::tenant::fresh_dir(&staging)?;
        let work = slot.dirs.criu_work("checkpoint");
        crate::tenant::fresh_dir(&work)?;
        let dumped = self.dump(slot, pid, &staging, &work, true).await;
        let dump_ms = started.elapsed().as_millis() as u64;
        if let Err(e) = dumped {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
        // Its durable state is as of the dump, whatever the ingest takes.
        let dumped_at = pagestore::clock::now_ms();
        crate::tenant_files::stage_beside(&rt.info, &slot.dirs, &staging).await;
        let ingested = self
            .ingest_with_locality(slot, &slot.name, &staging, rt.last_manifest())
            .await;
        let _ = std::fs::remove_dir_all(&staging);
        let report = ingested.map_err(|e| Error::CheckpointNotCommitted {
            name: slot.name.clone(),
            cause: e.to_string(),
        })?;
        rt.manifest = report
            .manifest
            .clone()
            .map(|m| (report.checkpoint.id.clone(), m));
        rt.info.checkpoint = Some(report.checkpoint.id.to_string());
        rt.info.generation = Some(report.checkpoint.generation);
        rt.info.save(&slot.dirs)?;
        slot.checkpointed_at.store(dumped_at, Ordering::SeqCst);
        self.store.recompress_behind();
        info!(
            tenant = %slot.name,
            checkpoint = %report.checkpoint.id,
            generation = report.checkpoint.generation,
            paused_ms = dump_ms,
            total_ms = started.elapsed().as_millis() as u64,
            pages_new = report.pages_new,
            "checkpointed while running"
        );
        Ok(true)
    }
}

/// Whether a running tenant checkpointed every `every_ms` (0: never) is due at `now_ms`: its
/// newest durable state (`checkpointed_at`) is that old, and a byte crossed its connections
/// since (`last_active`).
pub(crate) fn due(every_ms: u64, checkpointed_at: u64, last_active: u64, now_ms: u64) -> bool {
    every_ms > 0
        && now_ms.saturating_sub(checkpointed_at) >= every_ms
        && last_active > checkpointed_at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_tenant_is_due_once_its_interval_passed_an_idle_one_never() {
        assert!(!due(0, 0, 10, 1_000_000), "off");
        assert!(!due(60_000, 1_000, 2_000, 30_000), "too soon");
        assert!(due(60_000, 1_000, 2_000, 61_000));
        assert!(!due(60_000, 1_000, 1_000, 200_000), "nothing since");
    }
}
