//! Swap-in: a swapped-out tenant's process tree running again, with the same memory, as a
//! pipeline of named stages:
//!
//! 1. **plan** ([`plan`]): the checkpoint, its manifest and the route: whole or lazy;
//! 2. **whole restore** ([`whole`]), for a small checkpoint all of whose pages this worker holds:
//!    written into a tmpfs and restored by a plain `criu restore`; done. Otherwise (or if a page
//!    is missing after all) the lazy route: its **plan** loads the ActiveSet and rewrites the
//!    pagemaps so that CRIU installs the set eagerly, and lists what to fetch;
//! 3. **mount** ([`mount`]): the checkpoint as a FUSE image directory served from the store;
//! 4. **restore** ([`restore`]): CRIU's lazy-pages daemon and the [`fill`] start,
//!    `criu restore --lazy-pages` returns once the tenant runs;
//! 5. **background** ([`background`]): the learning window, the fill, CRIU's copy of the
//!    remaining pages and the unmount, on a task of their own behind the reply.

mod background;
mod fill;
mod mount;
mod plan;
mod restore;
pub(crate) mod whole;

use std::time::{Duration, Instant};

use tracing::{info, info_span, Instrument};

use crate::activeset::Learn;
use crate::config::ActiveSetInstall;
use crate::error::Result;
use crate::host::Worker;
use crate::swap_in::background::Background;
use crate::swap_in::plan::{swapped_out_checkpoint, LazyPlan};
use crate::tenant::{elapsed_ms, SwapInReport, TenantState};

impl Worker {
    /// Restores a swapped-out tenant: returns once its process tree runs again (pid 1 of a new
    /// PID namespace, same memory); after a lazy restore, CRIU's lazy-pages daemon keeps filling
    /// in pages through the pager. With `use_activeset` (and the worker's `activeset` on), the
    /// tenant's ActiveSet is installed as `install` says (the worker's `activeset_install` if
    /// `None`) and learned anew.
    pub async fn swap_in(
        &self,
        name: &str,
        use_activeset: bool,
        install: Option<ActiveSetInstall>,
    ) -> Result<SwapInReport> {
        let install = install.unwrap_or(self.config.activeset_install);
        let slot = self.slot(name)?;
        let mut rt = slot.runtime.lock().await;
        let checkpoint_id = swapped_out_checkpoint(name, &rt.info)?;
        let swap = self.metrics.swap_started(crate::metrics::SwapOp::In);
        let started = Instant::now();
        let checkpoint = self
            .checkpoint_ref(name, &checkpoint_id, rt.info.generation)
            .await?;
        let span = info_span!("swap_in", checkpoint = %checkpoint.id);
        async {
            let learning = use_activeset && self.config.activeset;
            let route = self.route(&rt, &checkpoint).await?;
            if route.whole {
                if let Some(report) = self
                    .swap_in_whole(&slot, &mut rt, &checkpoint, &route.manifest, started)
                    .await?
                {
                    return Ok(report);
                }
            }
            let LazyPlan {
                manifest,
                eager,
                layout,
                fetch,
            } = self
                .plan_lazy(&slot, name, route.manifest, learning, install)
                .await;
            let (mount, mountpoint) = self.mount_checkpoint(name, manifest)?;
            let mount_ms = elapsed_ms(started);

            // When an ActiveSet was installed, the fill waits for the learning window.
            let fill_waits = learning && !eager.pages.is_empty();
            let restored = self
                .restore_lazily(&slot, mount, &mountpoint, fetch, learning, fill_waits)
                .await?;
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
            // Learn from the faults of the first moments; then the daemon copies in the rest, and
            // once every page is in, it exits and the checkpoint is unmounted.
            let learn = learning.then(|| Learn {
                store: self.store.clone(),
                slot: slot.clone(),
                tenant: name.to_string(),
                access: restored.mount.access_log().clone(),
                layout,
                plan: eager,
                install,
                checkpoint: checkpoint.id.to_string(),
                generation: checkpoint.generation,
                window: self.config.activeset_window,
                grace: Duration::from_millis(self.config.activeset_grace_ms),
                window_max: Duration::from_millis(self.config.activeset_window_max_ms),
            });
            let background = Background {
                learn,
                slot: slot.clone(),
                tenant: name.to_string(),
                usage_log: self.config.usage_log.clone(),
                access_file: slot.dirs.access_log(checkpoint.generation),
                restored,
            };
            slot.forget_last_restore();
            rt.restoring = Some(tokio::spawn(background.run()));
            rt.info.state = TenantState::Running;
            rt.info.pid = Some(pid);
            rt.info.last_swap_in = Some(report.clone());
            rt.info.save(&slot.dirs)?;
            info!(pid, total_ms = report.total_ms, "swapped in");
            Ok(report)
        }
        .instrument(span)
        .await
        .inspect(|_| swap.succeeded())
    }
}
