//! Swap-in: a swapped-out tenant's process tree running again, with the same memory, as a
//! pipeline of named stages:
//!
//! 1. **plan** ([`plan`]): the checkpoint, its manifest and the route: whole or lazy;
//! 2. **whole restore** ([`whole`]), for a small checkpoint all of whose pages this worker holds
//!    (or a larger one whose tenant touches much of it):
//!    written into a tmpfs and restored by a plain `criu restore`; done. Otherwise (or if a page
//!    is missing after all) the lazy route: its **plan** loads the ActiveSet and rewrites the
//!    pagemaps so that CRIU installs the set eagerly, and lists what to fetch;
//! 3. **mount** ([`mount`]): the [`fill`] starts fetching the restore set, and the checkpoint is
//!    mounted as a FUSE image directory served from the store;
//! 4. **restore** ([`restore`]): CRIU's lazy-pages daemon starts (the [`fill`] started before
//!    the mount), `criu restore --lazy-pages` returns once the tenant runs;
//! 5. **background** ([`background`]): the learning window, the fill, CRIU's copy of the
//!    remaining pages and the unmount, on a task of their own behind the reply.

mod background;
mod fill;
mod mount;
mod plan;
mod restore;
pub(crate) mod whole;

use std::time::{Duration, Instant};

use std::sync::Arc;

use tracing::{info, info_span, warn, Instrument};

use crate::activeset::{Learn, Window};
use crate::config::ActiveSetInstall;
use crate::crashpoint;
use crate::error::{Error, Result};
use crate::host::{TenantRuntime, TenantSlot, Worker};
use crate::swap_in::background::Background;
use crate::swap_in::plan::{swapped_out_checkpoint, LazyPlan};
use crate::tenant::{elapsed_ms, SwapInReport, TenantState};

impl Worker {
    /// Restores a swapped-out tenant: returns once its process tree runs again (pid 1 of a new
    /// PID namespace, same memory); after a lazy restore, CRIU's lazy-pages daemon keeps filling
    /// in pages through the pager. With `use_activeset` (and the worker's `activeset` on), the
    /// tenant's ActiveSet is installed as `install` says (the worker's `activeset_install` if
    /// `None`) and learned anew.
    ///
    /// This is an operator's swap-in: it waits for a swap slot and holds the tenant's gate (no
    /// connection is forwarded meanwhile; held ones go once it runs). It runs on a task of its
    /// own, so that a caller gone meanwhile (an API client that hung up) does not cancel it half
    /// done, in the tenant's span.
    pub async fn swap_in(
        self: &Arc<Self>,
        name: &str,
        use_activeset: bool,
        install: Option<ActiveSetInstall>,
    ) -> Result<SwapInReport> {
        let span = info_span!("tenant", tenant = %name);
        let (worker, name) = (Arc::clone(self), name.to_string());
        let swap_in = async move { worker.swap_in_held(&name, use_activeset, install).await };
        tokio::spawn(swap_in.instrument(span))
            .await
            .map_err(|source| crate::error::Error::TaskFailed {
                task: "swap-in",
                source,
            })?
    }

    async fn swap_in_held(
        self: &Arc<Self>,
        name: &str,
        use_activeset: bool,
        install: Option<ActiveSetInstall>,
    ) -> Result<SwapInReport> {
        let slot = self.slot(name)?;
        let _permit = self.swap_in_slot().await;
        let _gate = slot.gate.write().await;
        let report = self.swap_in_now(name, use_activeset, install).await?;
        slot.activity.touch();
        Ok(report)
    }

    /// The swap-in itself, under the tenant's gate. The tenant is `swapping-in` on disk
    /// meanwhile; a failed restore is counted, and the tenant is `failed` after
    /// `max_restore_failures` in a row (its checkpoints stay).
    pub(crate) async fn swap_in_now(
        &self,
        name: &str,
        use_activeset: bool,
        install: Option<ActiveSetInstall>,
    ) -> Result<SwapInReport> {
        self.fence.check()?;
        let slot = self.slot(name)?;
        let mut rt = slot.runtime.lock().await;
        let checkpoint_id = swapped_out_checkpoint(name, &rt.info)?;
        rt.info.state = TenantState::SwappingIn;
        rt.info.save(&slot.dirs)?;
        crashpoint::hit("swap-in:registry-saved");
        let swap = self.metrics.swap_started(crate::metrics::SwapOp::In);
        let limits = rt.info.limits;
        // Its files are on its own filesystem (mounted since it was added, or since this worker
        // started): restored without them, it would find an empty directory.
        let mounted = match rt.info.disk_quota {
            Some(bytes) => {
                crate::disk_quota::ensure_mounted(name, &slot.dirs, &slot.dirs.cwd(), bytes).await
            }
            None => Ok(()),
        };
        let restored = match mounted.and_then(|()| self.prepare_cgroup(name, &limits)) {
            // CRIU puts the tree back into the cgroup it was dumped from: this one.
            Ok(_) => {
                self.restore_checkpoint(&slot, &mut rt, name, checkpoint_id, use_activeset, install)
                    .await
            }
            Err(e) => Err(e),
        };
        match restored {
            Ok(report) => {
                self.keep_in_cgroup(name, report.pid, &limits);
                // Back at its checkpoint: nothing is unsaved yet (see `checkpoint`).
                slot.checkpointed_at.store(
                    pagestore::clock::now_ms(),
                    std::sync::atomic::Ordering::SeqCst,
                );
                crashpoint::hit("swap-in:recorded");
                swap.succeeded();
                Ok(report)
            }
            Err(e) => {
                rt.info.restore_failures += 1;
                rt.info.failure = Some(e.to_string());
                rt.info.state = if rt.info.restore_failures >= self.config.max_restore_failures {
                    TenantState::Failed
                } else {
                    TenantState::SwappedOut
                };
                warn!(
                    failures = rt.info.restore_failures,
                    state = %rt.info.state,
                    error = %e,
                    "restore failed; the checkpoint is kept"
                );
                self.drop_cgroup(name).await;
                rt.info.save(&slot.dirs)?;
                Err(e)
            }
        }
    }

    /// Restores checkpoint `checkpoint_id` of the tenant whose runtime is `rt`.
    async fn restore_checkpoint(
        &self,
        slot: &Arc<TenantSlot>,
        rt: &mut TenantRuntime,
        name: &str,
        checkpoint_id: String,
        use_activeset: bool,
        install: Option<ActiveSetInstall>,
    ) -> Result<SwapInReport> {
        let install = install.unwrap_or(self.config.activeset_install);
        let slot = slot.clone();
        let started = Instant::now();
        let cold_at_start = self.store.live_counters();
        let checkpoint = self
            .checkpoint_ref(name, &checkpoint_id, rt.info.generation)
            .await?;
        let span = info_span!("swap_in", checkpoint = %checkpoint.id);
        async {
            let learning = use_activeset && self.config.activeset;
            let route = self.route(&slot, rt, &checkpoint).await?;
            if let Some(fetch) = route.whole {
                let whole = self
                    .swap_in_whole(&slot, rt, &checkpoint, &route.manifest, fetch, started)
                    .await?;
                match (whole, route.only_whole()) {
                    (Some(report), _) => {
                        // Every page is in the tenant.
                        self.done_with_peer(name);
                        return Ok(report);
                    }
                    (None, true) => return Err(Error::WholeImageIncomplete(name.to_string())),
                    (None, false) => {}
                }
            }
            let LazyPlan {
                manifest,
                eager,
                layout,
                spaces,
                fetch,
                fill_waits,
            } = self
                .plan_lazy(&slot, name, route.manifest, learning, install)
                .await;
            // The restore set's cold reads start first: their round trip overlaps the mount
            // (9-14 ms, more on a host under load) instead of following it. When an ActiveSet
            // was installed, the rest (unless small) waits for the first answer (`fill_waits`).
            let planned_ms = elapsed_ms(started);
            slot.forget_last_restore();
            let fill = fill::start(
                self.store.clone(),
                fetch,
                &slot,
                fill_waits,
                (started, cold_at_start),
            );
            // The fill's first GETs go out before the mount blocks this thread: a task spawned
            // from a runtime thread waits in that thread's own slot, which no other thread
            // takes, until this one yields (its locality GET started ~20 ms late, after the
            // mount and the lazy-pages daemon's start).
            tokio::task::yield_now().await;
            let (mount, mountpoint) = match self.mount_checkpoint(name, manifest) {
                Ok(mounted) => mounted,
                Err(e) => {
                    fill.task.abort();
                    return Err(e);
                }
            };
            let mount_ms = elapsed_ms(started);
            let restored = self.restore_lazily(&slot, mount, &mountpoint, fill).await?;
            let pid = restored.pid;
            let (eager_pages, prefetched_pages) = match install {
                ActiveSetInstall::Eager => (eager.pages.len() as u64, 0),
                ActiveSetInstall::Prefetch => (0, eager.pages.len() as u64),
            };
            let report = SwapInReport {
                checkpoint: checkpoint.id.to_string(),
                pid,
                eager_pages,
                prefetched_pages,
                whole: false,
                prefetch: restored.prefetch.clone(),
                mount_ms,
                restore_ms: elapsed_ms(started) - mount_ms,
                total_ms: elapsed_ms(started),
            };
            // The first moments (learned from, when learning); then the daemon copies in the
            // rest, and once every page is in, it exits and the checkpoint is unmounted.
            let window = Window {
                access: restored.mount.access_log().clone(),
                grace: Duration::from_millis(self.config.activeset_grace_ms),
                max: Duration::from_millis(self.config.activeset_window_max_ms),
            };
            let learn = learning.then(|| Learn {
                store: self.store.clone(),
                slot: slot.clone(),
                tenant: name.to_string(),
                layout,
                spaces,
                plan: eager,
                install,
                checkpoint: checkpoint.id.to_string(),
                generation: checkpoint.generation,
                window: self.config.activeset_window,
                program_sets: self.program_sets.clone(),
            });
            let background = Background {
                window,
                learn,
                store: self.store.clone(),
                slot: slot.clone(),
                tenant: name.to_string(),
                usage_log: self.config.usage_log.clone(),
                access_file: slot.dirs.access_log(checkpoint.generation),
                restored,
            };
            crate::recovery::clear_restore_complete(&slot.dirs);
            rt.restoring = Some(tokio::spawn(background.run()));
            rt.info.state = TenantState::Running;
            rt.info.pid = Some(pid);
            rt.info.last_swap_in = Some(report.clone());
            rt.info.pages_pending = true;
            rt.info.restore_failures = 0;
            rt.info.failure = None;
            rt.info.last_active = Some(pagestore::clock::now_ms());
            crashpoint::hit("swap-in:restored");
            rt.info.save(&slot.dirs)?;
            info!(
                pid,
                planned_ms,
                mount_ms,
                total_ms = report.total_ms,
                "swapped in"
            );
            Ok(report)
        }
        .instrument(span)
        .await
    }
}
