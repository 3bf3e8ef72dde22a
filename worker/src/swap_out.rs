//! Swap-out: CRIU dumps a running tenant into a staging directory, the dump is ingested into the
//! store, and the checkpoint is committed as the tenant's newest.
//!
//! Swap-out never loses a tenant: its staging directory is deleted only after the manifest is
//! durable, and if the checkpoint cannot be committed the tenant is restored from the staged dump
//! and keeps running, its previous checkpoint untouched.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pagestore::ingest::IngestReport;
use tracing::{info, warn};

use crate::crashpoint;
use crate::error::{Error, Result};
use crate::host::{finish_restoring, TenantRuntime, TenantSlot, Worker, LAZY_COPY_LIMIT};
use crate::process::{process_alive, process_tree, wait_gone};
use crate::supervisor::Reason;
use crate::tenant::{elapsed_ms, fresh_dir, SwapOutReport, TenantInfo, TenantState};

/// How long a swap-out waits for each process of a dumped tree to be gone.
const DUMPED_GONE_WITHIN: Duration = Duration::from_secs(5);

/// How many times a swap-out or checkpoint dumps a tenant whose dumps are refused (`dump_check`).
const DUMP_TRIES: u32 = 3;

/// The pause before a refused dump is tried again.
const DUMP_RETRY_AFTER: Duration = Duration::from_millis(200);

impl Worker {
    /// Checkpoints a running tenant into the store, as an operator asks: its connections are
    /// closed first; its process is gone afterwards.
    pub async fn swap_out(self: &Arc<Self>, name: &str) -> Result<SwapOutReport> {
        let slot = self.slot(name)?;
        self.swap_out_because(&slot, Reason::Command, true).await
    }

    /// The swap-out itself, under the tenant's gate (see `supervisor`).
    pub(crate) async fn swap_out_now(&self, name: &str) -> Result<SwapOutReport> {
        let slot = self.slot(name)?;
        let mut rt = slot.runtime.lock().await;
        let pid = running_pid(name, &rt.info)?;
        // A process still being filled by a lazy restore cannot be dumped consistently.
        if let Some(restoring) = rt.restoring.take() {
            if !finish_restoring(restoring).await {
                warn!("previous lazy restore still copying pages after {LAZY_COPY_LIMIT:?}");
            }
        }

        let swap = self.metrics.swap_started(crate::metrics::SwapOp::Out);
        let started = Instant::now();
        let staging: PathBuf = self
            .config
            .staging_dir
            .join(format!("{name}-{}", pagestore::clock::now_ms()));
        fresh_dir(&staging)?;
        let work = slot.dirs.criu_work("dump");
        fresh_dir(&work)?;
        // The whole tree dies with the dump; it is reaped before the ingest, so that its memory
        // is free again (a restore needs none of its pids: see `launch`).
        let tree = process_tree(pid);
        let rss_bytes = self.memory_in_use(name, pid);
        // Recorded before the dump: a worker killed from here on finds the dump (complete or
        // not) and settles it at its restart (`recovery`).
        rt.info.state = TenantState::SwappingOut;
        rt.info.staging = Some(staging.clone());
        rt.info.rss_bytes = Some(rss_bytes);
        rt.info.save(&slot.dirs)?;
        crashpoint::hit("swap-out:registry-saved");
        if let Err(e) = self.dump(&slot, pid, &staging, &work, false).await {
            let _ = std::fs::remove_dir_all(&staging);
            // CRIU resumes the tree when a dump fails.
            rt.info.state = TenantState::Running;
            rt.info.staging = None;
            rt.info.save(&slot.dirs)?;
            return Err(e);
        }
        crashpoint::hit("swap-out:dumped");
        let dump_ms = elapsed_ms(started);
        for p in tree {
            wait_gone(p, DUMPED_GONE_WITHIN).await;
        }
        // A sleeping tenant keeps no cgroup; its restore makes it again.
        self.drop_cgroup(name).await;

        crate::tenant_files::stage_beside(&rt.info, &slot.dirs, &staging).await;
        let ingest_started = Instant::now();
        let report = match self
            .ingest_with_locality(&slot, name, &staging, rt.last_manifest())
            .await
        {
            Ok(r) => r,
            Err(cause) => {
                let outcome = self
                    .restore_from_dump(&slot, &mut rt, &staging, &work)
                    .await?;
                return Err(Error::SwapOutNotCommitted {
                    name: name.to_string(),
                    cause: cause.to_string(),
                    outcome,
                });
            }
        };
        crashpoint::hit("swap-out:committed");
        let out = SwapOutReport {
            checkpoint: report.checkpoint.id.to_string(),
            generation: report.checkpoint.generation,
            dump_ms,
            ingest_ms: elapsed_ms(ingest_started),
            total_ms: elapsed_ms(started),
            pages_total: report.pages_total,
            pages_zero: report.pages_zero,
            pages_new: report.pages_new,
            bytes_uploaded: report.bytes_uploaded,
            locality_pages: report.locality_pages,
            locality_bytes: report.locality_bytes,
            locality_written_pages: report.locality_changed_pages,
            rss_bytes,
        };
        commit(&slot, &mut rt, &report, &out)?;
        crashpoint::hit("swap-out:recorded");
        // The manifest is durable and recorded: the staged dump is no longer needed, unless the
        // next swap-in restores this checkpoint whole: then the dump is kept, moved beside the
        // local tier (`pagestore::whole_image`), behind the swap-out, and that restore reads it
        // where it lies.
        let whole = match (&report.manifest, self.config.keep_whole_images) {
            (Some(manifest), true) => crate::swap_in::whole::restored_whole(
                &self.config,
                slot.working_set_pages(),
                manifest.non_zero_pages().count(),
            )
            .map(|_| Arc::clone(manifest)),
            _ => None,
        };
        match whole {
            Some(manifest) => {
                self.store.keep_dump_behind(manifest, staging.clone());
            }
            None => delete_staging(&staging),
        }
        // Ingest wrote fast (lz4) packs; they become dense in the background (pagestore's
        // `recompress`), at the lowest CPU priority.
        self.store.recompress_behind();
        info!(
            checkpoint = %out.checkpoint,
            dump_ms = out.dump_ms,
            ingest_ms = out.ingest_ms,
            pages_new = out.pages_new,
            locality_pages = out.locality_pages,
            locality_bytes = out.locality_bytes,
            locality_written = out.locality_written_pages,
            "swapped out"
        );
        swap.succeeded();
        self.metrics.memory_freed(out.rss_bytes);
        Ok(out)
    }

    /// CRIU's dump of `slot`'s tree (root `pid`) into `staging`, in its network namespace and
    /// view, recording its cgroups; with `leave_running` the tree goes on (a checkpoint of a
    /// running tenant), else it ends with the dump. A dump refused for a file of the host's
    /// `/proc` held open (`dump_check`; the tree goes on) is tried again, [`DUMP_TRIES`] times in
    /// all, [`DUMP_RETRY_AFTER`] apart: such files are mostly open for a moment.
    pub(crate) async fn dump(
        &self,
        slot: &TenantSlot,
        pid: u32,
        staging: &Path,
        work: &Path,
        leave_running: bool,
    ) -> Result<()> {
        let hierarchies = self.cgroup_hierarchies_of(&slot.name, pid);
        let mut tries = 1;
        loop {
            let dumped = self
                .criu
                .dump_cgroups(
                    pid,
                    staging,
                    work,
                    slot.netns.as_deref(),
                    slot.view.as_ref(),
                    &hierarchies,
                    leave_running,
                )
                .await;
            match dumped {
                Err(Error::DumpRefused { held, .. }) if tries < DUMP_TRIES => {
                    warn!(tenant = %slot.name, ?held, tries, "dump refused: trying again");
                    tokio::time::sleep(DUMP_RETRY_AFTER).await;
                    // Nothing of the refused dump may be taken for part of the next.
                    fresh_dir(staging)?;
                    fresh_dir(work)?;
                    tries += 1;
                }
                other => return other,
            }
        }
    }

    /// Brings the tenant back from the dump still held in `staging` after its ingest failed; the
    /// previous checkpoint is untouched because no manifest was written. What became of the
    /// tenant, for the error: running again (the dump is deleted), or exited with the dump kept.
    async fn restore_from_dump(
        &self,
        slot: &TenantSlot,
        rt: &mut TenantRuntime,
        staging: &Path,
        work: &Path,
    ) -> Result<String> {
        rt.info.staging = None;
        let restored = match self.prepare_cgroup(&slot.name, &rt.info.limits) {
            Ok(cgroup) => {
                let cgroups = cgroup.map(|c| c.restore_roots()).unwrap_or_default();
                self.criu
                    .restore(staging, work, false, slot.placement(&cgroups), false)
                    .await
            }
            Err(e) => Err(e),
        };
        let outcome = match restored {
            Ok(pid) => {
                self.keep_in_cgroup(&slot.name, pid, &rt.info.limits);
                rt.info.pid = Some(pid);
                rt.info.state = TenantState::Running;
                format!("the tenant was restored from its dump and keeps running (pid {pid})")
            }
            Err(e) => {
                rt.info.state = TenantState::Exited;
                format!(
                    "restoring it from its dump also failed ({e}); the dump is kept in {}",
                    staging.display()
                )
            }
        };
        rt.info.save(&slot.dirs)?;
        if rt.info.state == TenantState::Running {
            let _ = std::fs::remove_dir_all(staging);
        }
        Ok(outcome)
    }
}

/// The pid of tenant `name`, which must be running, with its process alive.
fn running_pid(name: &str, info: &TenantInfo) -> Result<u32> {
    match info.state {
        TenantState::Running => {}
        TenantState::SwappedOut => {
            return Err(Error::AlreadySwappedOut {
                name: name.to_string(),
                checkpoint: info.checkpoint.clone().unwrap_or_default(),
            })
        }
        state => {
            return Err(Error::NotRunning {
                name: name.to_string(),
                state: state.to_string(),
            })
        }
    }
    info.pid
        .filter(|&p| process_alive(p))
        .ok_or_else(|| Error::NotRunning {
            name: name.to_string(),
            state: "exited".into(),
        })
}

/// Records the committed checkpoint as the tenant's newest: swapped out, its manifest kept for
/// the next swap-in, and its state saved.
fn commit(
    slot: &TenantSlot,
    rt: &mut TenantRuntime,
    report: &IngestReport,
    out: &SwapOutReport,
) -> Result<()> {
    rt.manifest = report
        .manifest
        .clone()
        .map(|m| (report.checkpoint.id.clone(), m));
    rt.info.state = TenantState::SwappedOut;
    rt.info.staging = None;
    rt.info.pages_pending = false;
    rt.info.checkpoint = Some(out.checkpoint.clone());
    rt.info.generation = Some(out.generation);
    rt.info.last_swap_out = Some(out.clone());
    rt.info.save(&slot.dirs)
}

/// Deletes a staged dump whose checkpoint is committed (a failure is logged: a restart sweeps
/// what is left, `recovery`).
fn delete_staging(staging: &std::path::Path) {
    if let Err(e) = std::fs::remove_dir_all(staging) {
        warn!(error = %e, "could not delete staging");
    }
}
