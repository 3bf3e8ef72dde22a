//! The two flows of a tenant's life: swap-out (CRIU dump → ingest → commit) and swap-in (mount the
//! checkpoint through the pager → CRIU lazy-pages daemon → `criu restore --lazy-pages`).
//!
//! Swap-out never loses a tenant: its staging directory is deleted only after the manifest is
//! durable, and if the checkpoint cannot be committed the tenant is restored from the staged dump
//! and keeps running, its previous checkpoint untouched.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::sync::Arc;

use criu_image::ImageLayout;
use pager::access::AccessLog;
use pager::activeset::{
    classify_faults, ActivePage, ActiveSet, Background, EagerPlan, RestoreTrace,
};
use pager::reads::RestorePhase;
use pagestore::PageStore;
use tracing::{info, info_span, warn, Instrument};

use crate::config::ActiveSetInstall;
use crate::criu::log_tail;
use crate::daemon::{wait_gone, TenantSlot, Worker};
use crate::error::{Error, Result};
use crate::tenant::{
    process_alive, process_tree, ActiveSetSummary, LastRestore, SwapInReport, SwapOutReport,
    TenantState,
};

/// How long a swap-in waits for the local tier to take in pages that ingests have just
/// committed (only when some are still queued): longer costs latency, shorter sends those pages'
/// reads to the cold tier.
const LOCAL_FILL_WAIT: Duration = Duration::from_millis(250);

/// How long a swap-out waits for the previous lazy restore to finish copying pages in.
pub(crate) const LAZY_COPY_LIMIT: Duration = Duration::from_secs(120);

pub(crate) fn fresh_dir(path: &Path) -> Result<()> {
    if path.exists() {
        std::fs::remove_dir_all(path).map_err(|e| Error::io(path, e))?;
    }
    std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))
}

fn ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

impl Worker {
    /// Checkpoints a running tenant into the store; its process is gone afterwards.
    pub async fn swap_out(&self, name: &str) -> Result<SwapOutReport> {
        let slot = self.slot(name)?;
        let mut rt = slot.runtime.lock().await;
        match rt.info.state {
            TenantState::Running => {}
            TenantState::SwappedOut => {
                return Err(Error::AlreadySwappedOut {
                    name: name.to_string(),
                    checkpoint: rt.info.checkpoint.clone().unwrap_or_default(),
                })
            }
            state => {
                return Err(Error::NotRunning {
                    name: name.to_string(),
                    state: state.to_string(),
                })
            }
        }
        let pid = rt
            .info
            .pid
            .filter(|&p| process_alive(p))
            .ok_or_else(|| Error::NotRunning {
                name: name.to_string(),
                state: "exited".into(),
            })?;
        // A process still being filled by a lazy restore cannot be dumped consistently.
        if let Some(restoring) = rt.restoring.take() {
            if tokio::time::timeout(LAZY_COPY_LIMIT, restoring)
                .await
                .is_err()
            {
                warn!("previous lazy restore still copying pages after {LAZY_COPY_LIMIT:?}");
            }
        }

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
        if let Err(e) = self.criu.dump(pid, &staging, &work).await {
            let _ = std::fs::remove_dir_all(&staging);
            // CRIU resumes the tree when a dump fails.
            return Err(e);
        }
        let dump_ms = ms(started);
        for p in tree {
            wait_gone(p, Duration::from_secs(5)).await;
        }

        let ingest_started = Instant::now();
        let report = match self.ingest_with_locality(&slot, name, &staging).await {
            Ok(r) => r,
            Err(cause) => {
                // Bring the tenant back from the dump we still hold; the previous checkpoint is
                // untouched because no manifest was written.
                let outcome = match self.criu.restore(&staging, &work, false).await {
                    Ok(pid) => {
                        rt.info.pid = Some(pid);
                        format!(
                            "the tenant was restored from its dump and keeps running (pid {pid})"
                        )
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
                    let _ = std::fs::remove_dir_all(&staging);
                }
                return Err(Error::SwapOutNotCommitted {
                    name: name.to_string(),
                    cause: cause.to_string(),
                    outcome,
                });
            }
        };
        // The manifest is durable: the staged dump is no longer needed.
        if let Err(e) = std::fs::remove_dir_all(&staging) {
            warn!(error = %e, "could not delete staging");
        }
        let out = SwapOutReport {
            checkpoint: report.checkpoint.id.to_string(),
            generation: report.checkpoint.generation,
            dump_ms,
            ingest_ms: ms(ingest_started),
            total_ms: ms(started),
            pages_total: report.pages_total,
            pages_zero: report.pages_zero,
            pages_new: report.pages_new,
            bytes_uploaded: report.bytes_uploaded,
            locality_pages: report.locality_pages,
            locality_bytes: report.locality_bytes,
        };
        rt.manifest = report
            .manifest
            .clone()
            .map(|m| (report.checkpoint.id.clone(), m));
        rt.info.state = TenantState::SwappedOut;
        rt.info.checkpoint = Some(out.checkpoint.clone());
        rt.info.generation = Some(out.generation);
        rt.info.last_swap_out = Some(out.clone());
        rt.info.save(&slot.dirs)?;
        info!(
            checkpoint = %out.checkpoint,
            dump_ms = out.dump_ms,
            ingest_ms = out.ingest_ms,
            pages_new = out.pages_new,
            locality_pages = out.locality_pages,
            locality_bytes = out.locality_bytes,
            "swapped out"
        );
        Ok(out)
    }

    /// Restores a swapped-out tenant lazily: returns once its process tree runs again (pid 1 of
    /// a new PID namespace, same memory), while CRIU's lazy-pages daemon keeps filling in pages through the pager.
    pub async fn swap_in(
        &self,
        name: &str,
        use_activeset: bool,
        install: Option<ActiveSetInstall>,
    ) -> Result<SwapInReport> {
        let install = install.unwrap_or(self.config.activeset_install);
        let slot = self.slot(name)?;
        let mut rt = slot.runtime.lock().await;
        let checkpoint_id = match (rt.info.state, &rt.info.checkpoint) {
            (TenantState::Running, _) | (_, None) => {
                return Err(Error::NotSwappedOut {
                    name: name.to_string(),
                    state: rt.info.state.to_string(),
                })
            }
            (_, Some(c)) => c.clone(),
        };
        let started = Instant::now();
        // The worker knows the checkpoint's key: no listing round trip to the cold tier.
        let checkpoint = match (
            pagestore::CheckpointId::parse(&checkpoint_id),
            rt.info.generation,
        ) {
            (Some(id), Some(generation)) => pagestore::CheckpointRef {
                tenant: name.to_string(),
                generation,
                id,
            },
            _ => self.store.resolve(&checkpoint_id).await?,
        };
        let span = info_span!("swap_in", checkpoint = %checkpoint.id);
        async {
            let want_set = use_activeset && self.config.activeset;
            // Both are usually in memory already: this worker wrote them.
            let kept_manifest = rt
                .manifest
                .as_ref()
                .filter(|(id, _)| *id == checkpoint.id)
                .map(|(_, m)| m.clone());
            let kept_set = slot
                .activeset
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let mut manifest = match kept_manifest {
                Some(m) => (*m).clone(),
                None => self.store.manifest(&checkpoint).await?,
            };
            let whole = crate::whole::small_enough(&manifest, self.config.whole_restore_below_mib);
            // A swap-out's new pages reach the local tier just behind its commit; a swap-in
            // right after it waits briefly for them rather than fetching them from the cold tier,
            // unless it is a small one with every page in memory already (a small tenant's last
            // checkpoint is kept there): then the filler's work for other tenants is none of its
            // business. Only small ones are checked: the check walks the page list.
            let in_memory = whole && self.store.in_memory(&manifest);
            if !in_memory
                && tokio::time::timeout(LOCAL_FILL_WAIT, self.store.local_settled())
                    .await
                    .is_err()
            {
                info!(waited_ms = LOCAL_FILL_WAIT.as_millis() as u64, "local tier still filling");
            }
            // Decided before the ActiveSet is looked at: a whole restore does not use it (and a
            // tenant only ever restored whole has none to keep in memory; looking for it in the
            // cold tier on each swap-in cost ~44 ms through the latency proxy).
            if whole {
                if let Some(report) = self
                    .swap_in_whole(&slot, &mut rt, &checkpoint, &manifest, started)
                    .await?
                {
                    return Ok(report);
                }
            }
            let set = match (want_set, kept_set) {
                (false, _) => Ok(None),
                (true, Some(set)) => Ok(Some(set)),
                (true, None) => self.load_activeset(name).await,
            };
            let plan = if want_set {
                let max = self.config.activeset_max_pages;
                match set {
                    Ok(Some(set)) if install == ActiveSetInstall::Prefetch => {
                        set.prefetch_plan(&manifest, max)
                    }
                    Ok(Some(set)) => set.eager_plan(&mut manifest, max),
                    Ok(None) => EagerPlan::default(),
                    Err(e) => {
                        warn!(error = %e, "ignoring an unreadable ActiveSet");
                        EagerPlan::default()
                    }
                }
            } else {
                EagerPlan::default()
            };
            // The served (rewritten) pagemaps are what the fault classifier must see.
            let layout = ImageLayout::of(&manifest);
            // Everything `criu restore` will read before the tenant runs (its eager pages and the
            // ActiveSet) is fetched in a few large requests while the mount, the daemon and the
            // restore start; a page the restore reads before its range has arrived waits for that
            // same request (single flight), so the restore is not held back to wait for all.
            let mut restore_set = layout.eager_page_ids(&manifest);
            // A set left lazy is fetched along with them, to be faulted in from memory.
            if install == ActiveSetInstall::Prefetch {
                restore_set.extend(&plan.ids);
            }
            // CRIU's lazy-pages daemon copies in every remaining page with one small read at a
            // time; from a cold tier each costs a round trip (measured: ~450 serial reads of
            // ~50 ms, 20 s before a Python tenant's first answer), and faults wait behind them.
            // So the rest of the image is filled in behind the restore with large parallel
            // ranged reads, and the daemon's reads find it in memory.
            let fill_ids = layout.lazy_page_ids(&manifest);
            let locality = want_set.then(|| self.locality_source(&manifest)).flatten();
            let (mount, mountpoint) = self.mount_checkpoint(name, manifest)?;
            let mount_ms = ms(started);

            let work = slot.dirs.criu_work("restore");
            fresh_dir(&work)?;
            let daemon_work = slot.dirs.criu_work("lazy-pages");
            fresh_dir(&daemon_work)?;
            // The daemon starts alongside the restore set's prefetch and the restore itself
            // (each CRIU run spends tens of ms probing the kernel first); the gate hands it the
            // tenant's userfaultfds once it listens.
            let mut lazy = self.criu.spawn_lazy_pages(&mountpoint, &daemon_work)?;
            // While learning, the daemon serves faults only until the window closes.
            let learning = use_activeset && self.config.activeset;
            // Then the fill, so that the restore set's requests go first. When an ActiveSet was
            // installed, the first answer needs none of the fill, and fetching, decoding and
            // checking the rest of the image would only take the CPU from it (the large-heap
            // tenant's fill is 274 MB): it waits for the learning window to close. A fault the
            // set missed meanwhile fetches its own page.
            let (prefetched_tx, prefetched) = tokio::sync::oneshot::channel();
            let (window_closed_tx, window_closed) = tokio::sync::oneshot::channel::<()>();
            let fill_waits = learning && !plan.pages.is_empty();
            let fill = {
                let store = self.store.clone();
                tokio::spawn(async move {
                    let restore_set = store.prefetch_with_locality(&restore_set, locality.as_ref());
                    let _ = prefetched_tx.send(restore_set.await);
                    if fill_waits {
                        // A dropped sender (the swap-in failed) lets it go too.
                        let _ = window_closed.await;
                    }
                    store.prefetch(&fill_ids).await
                })
            };
            let mut gate = crate::lazy_gate::LazyGate::open(&work, &daemon_work)?;
            if !learning {
                gate.release();
            }
            let restored = match self.criu.restore(&mountpoint, &work, true).await {
                Ok(pid) => wait_for_daemon(&gate, &mut lazy, &daemon_work)
                    .await
                    .map(|()| pid)
                    .map_err(|status| (Some(pid), self.criu.lazy_pages_failure(&daemon_work, status))),
                Err(e) => Err((None, e)),
            };
            let pid = match restored {
                Ok(pid) => {
                    let next = if learning {
                        RestorePhase::Faults
                    } else {
                        RestorePhase::Background
                    };
                    mount.reads().set_phase(next);
                    pid
                }
                Err((pid, e)) => {
                    // A tenant whose lazy memory nobody serves would hang at its first fault:
                    // it goes, and the checkpoint it came from stays its newest.
                    if let Some(pid) = pid {
                        crate::daemon::kill_tree(pid).await;
                    }
                    drop(gate);
                    fill.abort();
                    let _ = lazy.kill().await;
                    let _ = tokio::task::spawn_blocking(move || mount.unmount()).await;
                    return Err(e);
                }
            };
            let prefetched = match prefetched.await {
                Ok(Ok(r)) => {
                    info!(
                        pages = r.requested,
                        already_hot = r.already_hot,
                        cold_pages = r.cold_pages,
                        cold_gets = r.cold_gets,
                        cold_bytes = r.cold_bytes,
                        locality = ?r.locality,
                        ms = r.ms,
                        "restore set prefetched"
                    );
                    r
                }
                // A failed prefetch only costs speed: the restore read what it needed itself.
                Ok(Err(e)) => {
                    warn!(error = %e, "prefetch failed");
                    Default::default()
                }
                Err(_) => {
                    warn!("prefetch task ended early");
                    Default::default()
                }
            };
            let (eager_pages, prefetched_pages) = match install {
                ActiveSetInstall::Eager => (plan.pages.len() as u64, 0),
                ActiveSetInstall::Prefetch => (0, plan.pages.len() as u64),
            };
            let report = SwapInReport {
                checkpoint: checkpoint.id.to_string(),
                pid,
                eager_pages,
                prefetched_pages,
                whole: false,
                prefetch: prefetched,
                mount_ms,
                restore_ms: ms(started) - mount_ms,
                total_ms: ms(started),
            };
            // Learn from the faults of the first moments; then the daemon copies in the rest, and
            // once every page is in, it exits and the checkpoint is unmounted.
            let learn = Learn {
                store: self.store.clone(),
                slot: slot.clone(),
                tenant: name.to_string(),
                access: mount.access_log().clone(),
                layout,
                plan,
                install,
                checkpoint: checkpoint.id.to_string(),
                generation: checkpoint.generation,
                window: self.config.activeset_window,
                grace: Duration::from_millis(self.config.activeset_grace_ms),
                window_max: Duration::from_millis(self.config.activeset_window_max_ms),
            };
            let access_file = slot.dirs.root.join(format!("access-{}.jsonl", checkpoint.generation));
            let tenant = name.to_string();
            let work_dir = daemon_work.clone();
            let fill_slot = slot.clone();
            let reads_slot = slot.clone();
            let usage_log = self.config.usage_log.clone();
            let restore_set = report.prefetch.clone();
            *slot.last_fill.lock().unwrap_or_else(|p| p.into_inner()) = None;
            *slot.last_reads.lock().unwrap_or_else(|p| p.into_inner()) = None;
            let reads = mount.reads().clone();
            rt.restoring = Some(tokio::spawn(async move {
                let learned = async {
                    if learning {
                        let faults = learn.watch().await;
                        reads.set_phase(RestorePhase::Background);
                        gate.release();
                        let _ = window_closed_tx.send(());
                        if let Err(e) = learn.save(faults).await {
                            warn!(tenant = %learn.tenant, error = %e, "could not save the ActiveSet");
                        }
                    }
                    drop(gate);
                };
                let filled = async {
                    match fill.await {
                        Ok(Ok(r)) => {
                            info!(
                                tenant = %learn.tenant,
                                pages = r.requested,
                                cold_pages = r.cold_pages,
                                cold_gets = r.cold_gets,
                                cold_bytes = r.cold_bytes,
                                ms = r.ms,
                                "image filled in behind the restore"
                            );
                            let record = pagestore::usage::UsageRecord {
                                at_ms: pagestore::clock::now_ms(),
                                tenant: learn.tenant.clone(),
                                cold_gets: restore_set.cold_gets + r.cold_gets,
                                cold_bytes: restore_set.cold_bytes + r.cold_bytes,
                            };
                            if let Err(e) = pagestore::usage::append(&usage_log, &record) {
                                warn!(error = %e, "could not record the swap-in's cold reads");
                            }
                            *fill_slot.last_fill.lock().unwrap_or_else(|p| p.into_inner()) =
                                Some(r);
                        }
                        Ok(Err(e)) => warn!(error = %e, "background fill failed"),
                        Err(e) => warn!(error = %e, "background fill task failed"),
                    }
                };
                let copied = async {
                    let status = lazy.wait().await;
                    let accesses = mount.access_log().snapshot();
                    let by_tier = mount.reads().report();
                    info!(
                        tenant,
                        restore = ?by_tier.restore,
                        faults = ?by_tier.faults,
                        background = ?by_tier.background,
                        "lazy restore reads by tier"
                    );
                    *reads_slot.last_reads.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(by_tier);
                    if let Err(e) = write_access_log(&access_file, &accesses) {
                        warn!(tenant, error = %e, "could not save the access log");
                    }
                    if let Err(e) = tokio::task::spawn_blocking(move || mount.unmount()).await {
                        warn!(tenant, error = %e, "unmount task failed");
                    }
                    match status {
                        Ok(s) if s.success() => {
                            info!(tenant, page_reads = accesses.len(), "lazy restore complete")
                        }
                        other => warn!(
                            tenant,
                            status = ?other,
                            log = %log_tail(&work_dir.join("lazy-pages.log"), 5),
                            "lazy-pages daemon ended badly"
                        ),
                    }
                };
                tokio::join!(learned, filled, copied);
            }));
            rt.info.state = TenantState::Running;
            rt.info.pid = Some(pid);
            rt.info.last_swap_in = Some(report.clone());
            rt.info.save(&slot.dirs)?;
            info!(pid, total_ms = report.total_ms, "swapped in");
            Ok(report)
        }
        .instrument(span)
        .await
    }
}

impl Worker {
    /// The directory a swap-in of tenant `name` mounts its image at, `mnt/NAME`, with nothing
    /// mounted on it.
    pub(crate) fn fresh_mountpoint(&self, name: &str) -> Result<PathBuf> {
        let mountpoint = self.config.mounts_dir.join(name);
        crate::image_tmpfs::fresh_mountpoint(&mountpoint)?;
        Ok(mountpoint)
    }

    /// Mounts a checkpoint's image directory (FUSE, served from the store) at `mnt/NAME`.
    pub(crate) fn mount_checkpoint(
        &self,
        name: &str,
        manifest: pagestore::Manifest,
    ) -> Result<(pager::ImageMount, PathBuf)> {
        let mountpoint = self.fresh_mountpoint(name)?;
        let mount = pager::ImageMount::mount(
            self.store.clone(),
            manifest,
            &mountpoint,
            tokio::runtime::Handle::current(),
        )?;
        Ok((mount, mountpoint))
    }
}

/// Waits until the lazy-pages daemon holds the restored tenant's userfaultfds; the daemon's exit
/// status (or a timeout) otherwise.
async fn wait_for_daemon(
    gate: &crate::lazy_gate::LazyGate,
    lazy: &mut tokio::process::Child,
    daemon_work: &Path,
) -> std::result::Result<(), String> {
    let started = Instant::now();
    while !gate.daemon_connected() {
        if let Ok(Some(status)) = lazy.try_wait() {
            return Err(status.to_string());
        }
        if started.elapsed() > Duration::from_secs(10) {
            return Err(format!("no socket in {} after 10 s", daemon_work.display()));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

/// Learning one restore's working set into the tenant's ActiveSet.
struct Learn {
    store: Arc<PageStore>,
    slot: Arc<TenantSlot>,
    tenant: String,
    access: Arc<AccessLog>,
    layout: ImageLayout,
    plan: EagerPlan,
    install: ActiveSetInstall,
    checkpoint: String,
    generation: u64,
    window: usize,
    grace: Duration,
    window_max: Duration,
}

/// When a learning window closes (µs since the mount): `grace` after the last page read since
/// the restore, when the tenant has gone quiet (its first request answered), and `max` after the
/// restore at the latest. A fixed window would close in the middle of a slow first request (20
/// one-page faults from a cold tier are a second) and leave the rest of its faults unlearned, so
/// the next restore would miss them again.
fn window_closes_at(restored_at: u64, last_read_at: Option<u64>, grace: u64, max: u64) -> u64 {
    let quiet_from = last_read_at.map_or(restored_at, |t| t.max(restored_at));
    (quiet_from + grace).min(restored_at + max)
}

impl Learn {
    /// Waits out the learning window and picks out its faults.
    async fn watch(&self) -> Vec<ActivePage> {
        let restored_at = self.access.elapsed_us();
        let grace = self.grace.as_micros() as u64;
        let max = self.window_max.as_micros() as u64;
        let until = loop {
            let closes = window_closes_at(restored_at, self.access.last_at_us(), grace, max);
            let now = self.access.elapsed_us();
            if now >= closes {
                break closes;
            }
            tokio::time::sleep(Duration::from_micros(closes - now)).await;
        };
        // The lazy gate holds the background copy until this window has closed.
        classify_faults(
            &self.layout,
            &self.access.snapshot(),
            until,
            Background::Held,
        )
    }

    /// Adds this restore's trace to the tenant's ActiveSet and stores it.
    async fn save(&self, faults: Vec<ActivePage>) -> Result<()> {
        let kept = self
            .slot
            .activeset
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut set = match kept {
            Some(set) => set,
            None => load_activeset(&self.store, &self.tenant)
                .await?
                .unwrap_or_else(|| ActiveSet::new(&self.tenant)),
        };
        let trace = trace_of(
            &self.plan,
            self.install,
            faults,
            &self.checkpoint,
            self.generation,
        );
        info!(
            tenant = %self.tenant,
            eager = trace.eager_pages,
            foreseen = trace.foreseen,
            faults = trace.faults,
            hit_rate = trace.hit_rate(),
            "ActiveSet learned"
        );
        set.record(trace, self.window);
        let body = serde_json::to_vec(&set).map_err(|e| Error::Protocol(e.to_string()))?;
        // The next swap-in plans from memory, without a cold-tier round trip (the store keeps
        // the durable copy for a restarted worker).
        *self
            .slot
            .activeset
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(set);
        self.store
            .put_meta(ACTIVESET_KIND, &self.tenant, &body)
            .await?;
        Ok(())
    }
}

/// One restore's trace. Pages installed eagerly can no longer fault: they count as touched (so
/// the set does not oscillate), ahead of the faults. A set left lazy (prefetched) faults in
/// whole, so its faults alone are the trace, and those the set foresaw count as hits.
fn trace_of(
    plan: &EagerPlan,
    install: ActiveSetInstall,
    faults: Vec<ActivePage>,
    checkpoint: &str,
    generation: u64,
) -> RestoreTrace {
    let (pages, eager_pages, foreseen) = match install {
        ActiveSetInstall::Eager => {
            let mut pages = plan.pages.clone();
            pages.extend(faults.iter().cloned());
            (pages, plan.pages.len() as u64, 0)
        }
        ActiveSetInstall::Prefetch => {
            let set: std::collections::HashSet<(&str, u64)> = plan
                .pages
                .iter()
                .map(|p| (p.pagemap.as_str(), p.vaddr))
                .collect();
            let foreseen = faults
                .iter()
                .filter(|f| set.contains(&(f.pagemap.as_str(), f.vaddr)))
                .count() as u64;
            (faults.clone(), 0, foreseen)
        }
    };
    RestoreTrace {
        checkpoint: checkpoint.to_string(),
        generation,
        eager_pages,
        foreseen,
        faults: faults.len() as u64 - foreseen,
        pages,
    }
}

const ACTIVESET_KIND: &str = "activeset";

pub(crate) async fn load_activeset(store: &PageStore, tenant: &str) -> Result<Option<ActiveSet>> {
    match store.latest_meta(ACTIVESET_KIND, tenant).await? {
        Some(body) => serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| Error::Protocol(format!("bad ActiveSet of {tenant}: {e}"))),
        None => Ok(None),
    }
}

impl Worker {
    async fn load_activeset(&self, tenant: &str) -> Result<Option<ActiveSet>> {
        load_activeset(&self.store, tenant).await
    }

    /// What `pico tenant activeset NAME` shows.
    pub async fn activeset_summary(&self, name: &str) -> Result<ActiveSetSummary> {
        self.slot(name)?;
        let set = self
            .load_activeset(name)
            .await?
            .unwrap_or_else(|| ActiveSet::new(name));
        let list = set.pages(self.config.activeset_max_pages);
        Ok(ActiveSetSummary {
            tenant: name.to_string(),
            restores: set.restores.len(),
            pages: list.len(),
            bytes: (list.len() * pagestore::PAGE_SIZE) as u64,
            last: set.restores.first().map(|t| LastRestore {
                checkpoint: t.checkpoint.clone(),
                generation: t.generation,
                eager_pages: t.eager_pages,
                faults: t.faults,
                hit_rate: t.hit_rate(),
            }),
            list,
        })
    }
}

pub(crate) fn write_access_log(
    path: &Path,
    accesses: &[pager::access::PageAccess],
) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for a in accesses {
        serde_json::to_writer(&mut out, a)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::window_closes_at;

    const MS: u64 = 1000;

    #[test]
    fn a_tenant_that_never_faults_closes_the_window_one_grace_after_the_restore() {
        assert_eq!(
            window_closes_at(50 * MS, None, 1000 * MS, 5000 * MS),
            1050 * MS
        );
        // Reads before the restore returned (the restore's own) do not extend it.
        assert_eq!(
            window_closes_at(50 * MS, Some(40 * MS), 1000 * MS, 5000 * MS),
            1050 * MS
        );
    }

    #[test]
    fn faults_keep_the_window_open_until_the_tenant_goes_quiet() {
        assert_eq!(
            window_closes_at(50 * MS, Some(1800 * MS), 1000 * MS, 5000 * MS),
            2800 * MS
        );
    }

    #[test]
    fn a_tenant_that_keeps_faulting_closes_the_window_at_the_cap() {
        assert_eq!(
            window_closes_at(50 * MS, Some(4900 * MS), 1000 * MS, 5000 * MS),
            5050 * MS
        );
    }
}
