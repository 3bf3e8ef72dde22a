//! The first stage of a swap-in: which checkpoint, its manifest, and whether it is restored whole
//! ([`Route`]); for a lazy restore, what CRIU is to install eagerly and what is fetched ahead of
//! it and behind it ([`LazyPlan`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use criu_image::{ImageLayout, ImageSpaces};
use pager::activeset::EagerPlan;
use pagestore::read::ReadPriority;
use pagestore::{CheckpointRef, Manifest};
use tracing::{info, warn};

use crate::activeset::own_activeset;
use crate::config::ActiveSetInstall;
use crate::error::{Error, Result};
use crate::host::{TenantRuntime, TenantSlot, Worker};
use crate::swap_in::fill::{FillPlan, RestoreSetFetch};
use crate::swap_in::whole;
use crate::tenant::{TenantInfo, TenantState};

/// How long a swap-in waits for the local tier to take in pages that ingests have just
/// committed (only when some are still queued): longer costs latency, shorter sends those pages'
/// reads to the cold tier.
const LOCAL_FILL_WAIT: Duration = Duration::from_millis(250);

/// The checkpoint a swap-in restores and the way it goes.
pub(super) struct Route {
    pub manifest: Manifest,
    /// Whether a whole restore is tried first (see `whole.rs`) and what it fetches of the pages
    /// this worker lacks: [`whole::Fetch::Nothing`] for a small image, `Few` for a dense one,
    /// `All` for a tenant restored whole or not at all; `None`: lazy.
    pub whole: Option<whole::Fetch>,
}

impl Route {
    /// Restored whole or not at all: a tenant in a user namespace where CRIU cannot restore it
    /// lazily (see `userns`); its pages are fetched from any tier first.
    pub fn only_whole(&self) -> bool {
        self.whole == Some(whole::Fetch::All)
    }
}

/// What a lazy restore needs before it mounts the checkpoint.
pub(super) struct LazyPlan {
    /// The manifest to serve: its pagemaps rewritten when an ActiveSet is installed eagerly.
    pub manifest: Manifest,
    /// The ActiveSet's pages, as installed (eagerly, or prefetched and left lazy).
    pub eager: EagerPlan,
    /// The layout of the served (rewritten) pagemaps: what the fault classifier must see.
    pub layout: ImageLayout,
    /// The processes' mappings, with which a set learned from this restore is lent to another
    /// tenant of the program (see `program_sets`).
    pub spaces: ImageSpaces,
    /// What is fetched ahead of the restore and behind it.
    pub fetch: FillPlan,
    /// Whether the fill holds the rest back for the first answer: an ActiveSet was installed
    /// and the rest is worth holding (`RestSize::worth_holding`).
    pub fill_waits: bool,
}

/// The id of the checkpoint tenant `name` is to be restored from: it must be swapped out.
pub(super) fn swapped_out_checkpoint(name: &str, info: &TenantInfo) -> Result<String> {
    match (info.state, &info.checkpoint) {
        (TenantState::Running, _) | (_, None) => Err(Error::NotSwappedOut {
            name: name.to_string(),
            state: info.state.to_string(),
        }),
        (_, Some(c)) => Ok(c.clone()),
    }
}

impl Worker {
    /// The checkpoint `id` of tenant `name`. The worker knows its key (`generation` from the
    /// tenant's record): no listing round trip to the cold tier, unless the record lacks it.
    pub(super) async fn checkpoint_ref(
        &self,
        name: &str,
        id: &str,
        generation: Option<u64>,
    ) -> Result<CheckpointRef> {
        Ok(match (pagestore::CheckpointId::parse(id), generation) {
            (Some(id), Some(generation)) => CheckpointRef {
                tenant: name.to_string(),
                generation,
                id,
            },
            _ => self.store.resolve(id).await?,
        })
    }

    /// The checkpoint's manifest (usually still in memory: this worker wrote it; else read and
    /// kept, as what the tenant's next dump is compared with: `TenantRuntime::manifest`) and
    /// whether it is small or dense enough to be restored whole; waits briefly for the local
    /// tier to take in a just-committed ingest's pages when they may be needed.
    pub(super) async fn route(
        &self,
        slot: &TenantSlot,
        rt: &mut TenantRuntime,
        checkpoint: &CheckpointRef,
    ) -> Result<Route> {
        let kept_manifest = rt
            .manifest
            .as_ref()
            .filter(|(id, _)| *id == checkpoint.id)
            .map(|(_, m)| m.clone());
        let manifest = match kept_manifest {
            Some(m) => m,
            None => {
                let read = Arc::new(self.store.manifest(checkpoint).await?);
                rt.manifest = Some((checkpoint.id.clone(), read.clone()));
                read
            }
        };
        let manifest = (*manifest).clone();
        let only_whole =
            rt.info.user_namespace.is_some() && !crate::userns::lazy_restores_allowed();
        // A restarted worker reads the tenant's set from its directory first: its size decides.
        crate::activeset::kept_or_copied(slot, &slot.name);
        let first = self.whole_first(slot, &manifest);
        // A swap-out's new pages reach the local tier just behind its commit; a swap-in
        // right after it waits briefly for them rather than fetching them from the cold tier,
        // unless it is a small one with every page in memory already (a small tenant's last
        // checkpoint is kept there): then the filler's work for other tenants is none of its
        // business. Only small ones are checked: the check walks the page list under the
        // memory tier's lock.
        let in_memory = first == Some(whole::Fetch::Nothing) && self.store.in_memory(&manifest);
        if !in_memory
            && tokio::time::timeout(LOCAL_FILL_WAIT, self.store.ingests_cached())
                .await
                .is_err()
        {
            info!(
                waited_ms = LOCAL_FILL_WAIT.as_millis() as u64,
                "local tier still filling"
            );
        }
        let whole = match only_whole {
            true => Some(whole::Fetch::All),
            false => first,
        };
        Ok(Route { manifest, whole })
    }

    /// Whether a whole restore of `manifest` is tried first, and what it fetches: it is small
    /// (nothing), or its tenant's working set is dense in it (a few pages; see
    /// `whole::choice::dense_enough`). Whole restores are off altogether with
    /// `whole_restore_below_mib = 0`.
    fn whole_first(&self, slot: &TenantSlot, manifest: &Manifest) -> Option<whole::Fetch> {
        let pages = manifest.non_zero_pages().count();
        let working_set = slot.working_set_pages();
        let fetch = whole::restored_whole(&self.config, working_set, pages);
        if fetch == Some(whole::Fetch::Few) {
            info!(
                pages,
                working_set = working_set.unwrap_or(0),
                "dense working set: trying a whole restore"
            );
        }
        fetch
    }

    /// Plans a lazy restore of `manifest`: with `learning` (an ActiveSet in use), the tenant's
    /// set is loaded (kept in memory, else from the store) and installed as `install` says,
    /// which for an eager install rewrites the pagemaps. An unreadable set is ignored.
    pub(super) async fn plan_lazy(
        &self,
        slot: &TenantSlot,
        name: &str,
        mut manifest: Manifest,
        learning: bool,
        install: ActiveSetInstall,
    ) -> LazyPlan {
        // Looked at only now: a whole restore does not use it (and a tenant only ever restored
        // whole has none to keep in memory; looking for it in the cold tier on each swap-in
        // cost ~44 ms through the latency proxy).
        let set = match learning {
            false => Ok(None),
            true => own_activeset(&self.store, slot, name).await,
        };
        // None of its own yet: the set its newest checkpoint's locality pack was written with,
        // borrowed from another tenant of its program (see `program_sets`), if any.
        let (set, guessed) = match set {
            Ok(None) if learning => match crate::host::lock_std(&slot.borrowed).clone() {
                Some(borrowed) => (Ok(Some(borrowed.set)), borrowed.moved),
                None => (Ok(None), false),
            },
            other => (other, false),
        };
        let eager = if learning {
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
        let spaces = if learning {
            ImageSpaces::of(&manifest)
        } else {
            ImageSpaces::default()
        };
        // Everything `criu restore` will read before the tenant runs (its eager pages and the
        // ActiveSet) is fetched in a few large requests, starting here, while the rest of the
        // plan is made and the mount, the daemon and the restore start; a page the restore
        // reads before its range has arrived waits for that same request (single flight), so
        // the restore is not held back to wait for all.
        let mut restore_set = layout.eager_page_ids(&manifest);
        // A set left lazy is fetched along with them, to be faulted in from memory.
        if install == ActiveSetInstall::Prefetch {
            restore_set.extend(&eager.ids);
        }
        // With learning off too: the pack holds CRIU's eager pages and the pages written
        // since the previous checkpoint, which the next request likely touches again, in one
        // GET instead of several ranged ones of the eager pages alone.
        let locality = self.locality_source(&manifest);
        let restore_set = RestoreSetFetch::start(self.store.clone(), restore_set, locality);
        // CRIU's lazy-pages daemon copies in every remaining page with one small read at a
        // time; from a cold tier each costs a round trip (measured: ~450 serial reads of
        // ~50 ms, 20 s before a Python tenant's first answer), and faults wait behind them.
        // So the rest of the image is filled in behind the restore with large parallel
        // ranged reads, and the daemon's reads find it in memory: first the mappings the set
        // touches, where the faults it did not foresee most likely are (not a large heap the
        // requests never read). A set moved from another tenant's layout is a guess: those
        // mappings are fetched at once, the rest held like the rest of a set of its own. So
        // are a dense tenant's (its set a large share of its image, see `whole::choice::dense_enough`):
        // a request that reads much of its memory strays outside the set too (node walking a
        // Map: ~15 faults a wake-up in its heap's mappings, whose pages a garbage collector
        // moves), and each such fault waited for the held fill or a cold round trip.
        let mut touched: HashMap<&str, Vec<usize>> = HashMap::new();
        for (pagemap, mapping) in eager
            .pages
            .iter()
            .filter_map(|p| spaces.mapping_of(&p.pagemap, p.vaddr))
        {
            touched.entry(pagemap).or_default().push(mapping);
        }
        for mappings in touched.values_mut() {
            mappings.sort_unstable();
            mappings.dedup();
        }
        let (near, mut far) = layout.lazy_page_ids_split(&manifest, |pagemap| {
            let mapping_of = spaces.mappings_of(pagemap);
            let touched_here = touched.get(pagemap);
            move |vaddr| {
                touched_here
                    .is_some_and(|t| mapping_of(vaddr).is_some_and(|m| t.binary_search(&m).is_ok()))
            }
        });
        let dense = whole::covers(
            eager.pages.len(),
            manifest.non_zero_pages().count(),
            self.config.whole_restore_dense_share,
        );
        let (at_once, held) = if guessed || dense {
            (near, far)
        } else {
            let mut all = near;
            all.append(&mut far);
            (Vec::new(), all)
        };
        let set_installed = !eager.pages.is_empty();
        let mut fetch = FillPlan {
            restore_set,
            at_once,
            held,
            priority: match set_installed {
                true => ReadPriority::Ahead,
                false => ReadPriority::Now,
            },
        };
        // A small rest comes along with the restore set: its round trip overlaps the set's
        // instead of following it. With a set of its own, a page the set missed (a page or two
        // a wake-up) then finds its page arriving; without one (a first wake-up, or learning
        // off), every page the tenant touches would: such a rest is not held for the first
        // answer anyway, and fetched after the set it cost the first answer a second round trip
        // (counter and nginx: two before the first answer, three at worst).
        let rest = fetch.rest_size(&self.store);
        if rest.comes_alongside(set_installed) {
            fetch = fetch.all_at_once();
        }
        let fill_waits = learning && set_installed && rest.worth_holding();
        LazyPlan {
            manifest,
            eager,
            layout,
            spaces,
            fetch,
            fill_waits,
        }
    }
}
