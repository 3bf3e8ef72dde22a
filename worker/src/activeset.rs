//! The worker's side of the ActiveSet (`pager::activeset`): learning it from the faults of one
//! lazy restore's first moments, storing it next to the tenant's checkpoints, loading it back,
//! and summarizing it for `pico tenant activeset`.
//!
//! **The window.** A restore's faults are learned until the tenant goes quiet
//! ([`window_closes_at`]); meanwhile the lazy gate holds CRIU's background copy back, so every
//! one-page read in the window is a fault (`Background::Held`).
//!
//! **Where it lives.** The store keeps the durable copy as a `meta` object of kind `activeset`
//! per tenant (newest wins); the worker keeps the set it last learned or loaded in the tenant's
//! slot, so a swap-in plans without a cold-tier round trip, and a copy of what it stored in the
//! tenant's directory (`activeset.json`), so that a restarted worker's first swap-in of the
//! tenant does not wait for the store's (a listing and a read: two cold round trips). The set
//! is a guess at what a restore reads, never what it restores (every page comes from the
//! checkpoint, checked): a copy left older by a crash costs a worse guess, nothing more.

use std::sync::Arc;
use std::time::Duration;

use criu_image::{ImageLayout, ImageSpaces};
use pager::access::AccessLog;
use pager::activeset::{
    classify_faults, ActivePage, ActiveSet, Background, EagerPlan, RestoreTrace,
};
use pagestore::PageStore;
use tracing::{info, warn};

use crate::config::ActiveSetInstall;
use crate::error::{Error, Result};
use crate::host::{TenantSlot, Worker};
use crate::program_sets::ProgramSets;
use crate::tenant::{ActiveSetSummary, LastRestore};

/// Learning one restore's working set into the tenant's ActiveSet.
pub(crate) struct Learn {
    pub(crate) store: Arc<PageStore>,
    pub(crate) slot: Arc<TenantSlot>,
    pub(crate) tenant: String,
    pub(crate) layout: ImageLayout,
    /// The restored checkpoint's mappings, lent with the set (see `program_sets`).
    pub(crate) spaces: ImageSpaces,
    pub(crate) plan: EagerPlan,
    pub(crate) install: ActiveSetInstall,
    pub(crate) checkpoint: String,
    pub(crate) generation: u64,
    pub(crate) window: usize,
    /// Where the learned set is lent to the next tenant of its program (see `program_sets`).
    pub(crate) program_sets: Arc<ProgramSets>,
}

/// The first moments of a lazy restore, until the tenant has gone quiet: the lazy gate holds
/// CRIU's background copy for them, whether the restore learns from their faults or not (the
/// copy would race the tenant's first request: see `lazy_gate`).
pub(crate) struct Window {
    /// The restore's page reads.
    pub(crate) access: Arc<AccessLog>,
    pub(crate) grace: Duration,
    pub(crate) max: Duration,
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

impl Window {
    /// Waits, from the restore (now), until the window closes; when it closed (µs since the
    /// mount).
    pub(crate) async fn closed(&self) -> u64 {
        let restored_at = self.access.elapsed_us();
        let grace = self.grace.as_micros() as u64;
        let max = self.max.as_micros() as u64;
        loop {
            let closes = window_closes_at(restored_at, self.access.last_at_us(), grace, max);
            let now = self.access.elapsed_us();
            if now >= closes {
                return closes;
            }
            tokio::time::sleep(Duration::from_micros(closes - now)).await;
        }
    }
}

impl Learn {
    /// The faults of the window of `access` that closed at `until`.
    pub(crate) fn faults(&self, access: &AccessLog, until: u64) -> Vec<ActivePage> {
        // The lazy gate held the background copy until the window closed.
        classify_faults(&self.layout, &access.snapshot(), until, Background::Held)
    }

    /// Adds this restore's trace to the tenant's ActiveSet and stores it.
    pub(crate) async fn save(&self, faults: Vec<ActivePage>) -> Result<()> {
        let mut set = own_activeset(&self.store, &self.slot, &self.tenant)
            .await?
            .map_or_else(|| ActiveSet::new(&self.tenant), Arc::unwrap_or_clone);
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
        let body = encode(&self.tenant, &set)?;
        // The next swap-in plans from memory, without a cold-tier round trip (the store keeps
        // the durable copy for a restarted worker).
        self.program_sets
            .lend(&self.slot.program, &set, &self.spaces);
        self.slot.keep_activeset(set);
        self.store
            .put_meta(ACTIVESET_KIND, &self.tenant, &body)
            .await?;
        keep_on_disk(&self.slot.dirs.activeset_file(), &body);
        Ok(())
    }
}

/// The format of a stored ActiveSet (the JSON body of its metadata object, with a `format`
/// field; one stored without is 1): the version this build writes and the newest it reads.
pub const ACTIVESET_FORMAT: u32 = 1;

/// The body of the metadata object that stores `set`.
fn encode(tenant: &str, set: &ActiveSet) -> Result<Vec<u8>> {
    let versioned = pagestore::format::Versioned {
        format: ACTIVESET_FORMAT,
        record: set,
    };
    serde_json::to_vec(&versioned).map_err(|source| Error::ActiveSetUnencodable {
        tenant: tenant.to_string(),
        source,
    })
}

/// Stores `set` as the tenant's ActiveSet (what a learning restore does).
pub async fn store_activeset(store: &PageStore, tenant: &str, set: &ActiveSet) -> Result<()> {
    store
        .put_meta(ACTIVESET_KIND, tenant, &encode(tenant, set)?)
        .await?;
    Ok(())
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
            let mut pages = plan.traced_pages();
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

/// The tenant's own ActiveSet: the one this worker holds for it, else none when the store is
/// known to hold none (a tenant added here that has learned nothing), else the store's, then
/// held and copied to the tenant's directory (a set stored by a worker that kept no copy is read
/// from the cold tier once, not at every swap-in until the tenant learns again).
pub(crate) async fn own_activeset(
    store: &PageStore,
    slot: &TenantSlot,
    tenant: &str,
) -> Result<Option<Arc<ActiveSet>>> {
    if let Some(set) = kept_or_copied(slot, tenant) {
        return Ok(Some(set));
    }
    if slot.no_activeset_stored() {
        return Ok(None);
    }
    let Some((set, body)) = load_stored(store, tenant).await? else {
        return Ok(None);
    };
    keep_on_disk(&slot.dirs.activeset_file(), &body);
    slot.keep_activeset(set);
    Ok(slot.kept_activeset())
}

/// The tenant's own ActiveSet as this machine has it: the one the worker holds, else the copy
/// in the tenant's directory (then held). A restarted worker holds none until it is asked; its
/// swap-in asks before it chooses between a whole and a lazy restore, which the set's size
/// decides (`TenantSlot::working_set_pages`), so that a dense tenant is restored as before the
/// restart.
pub(crate) fn kept_or_copied(slot: &TenantSlot, tenant: &str) -> Option<Arc<ActiveSet>> {
    if let Some(set) = slot.kept_activeset() {
        return Some(set);
    }
    if slot.no_activeset_stored() {
        return None;
    }
    let set = on_disk(&slot.dirs.activeset_file(), tenant)?;
    slot.keep_activeset(set);
    slot.kept_activeset()
}

/// Writes `body`, a stored ActiveSet, to the tenant's copy at `path` (a temporary file renamed
/// into place; not synced: a torn one is not used). A failure is logged: the store has the set.
fn keep_on_disk(path: &std::path::Path, body: &[u8]) {
    let tmp = path.with_extension("json.tmp");
    if let Err(e) = std::fs::write(&tmp, body).and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        warn!(path = %path.display(), error = %e, "ActiveSet not kept in the tenant's directory");
    }
}

/// The tenant's copy of its ActiveSet at `path`, if there is a readable one of a format this
/// build reads (else, logged, the store's is read).
fn on_disk(path: &std::path::Path, tenant: &str) -> Option<ActiveSet> {
    let body = match std::fs::read(path) {
        Ok(body) => body,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "cannot read the tenant's ActiveSet copy");
            return None;
        }
    };
    decode(tenant, &path.display().to_string(), &body)
        .inspect_err(|e| warn!(error = %e, "not using the tenant's ActiveSet copy"))
        .ok()
}

/// The tenant's ActiveSet as the store holds it; none if it was never stored. One of a newer
/// format than this build reads is refused (`pagestore::format`).
pub async fn load_activeset(store: &PageStore, tenant: &str) -> Result<Option<ActiveSet>> {
    Ok(load_stored(store, tenant).await?.map(|(set, _)| set))
}

/// [`load_activeset`], with the body it was decoded from (what a copy on disk holds).
async fn load_stored(store: &PageStore, tenant: &str) -> Result<Option<(ActiveSet, Vec<u8>)>> {
    let Some((key, body)) = store.latest_meta_object(ACTIVESET_KIND, tenant).await? else {
        return Ok(None);
    };
    let set = decode(tenant, &key, &body)?;
    Ok(Some((set, body)))
}

/// The ActiveSet stored as `body` (the object `key`).
fn decode(tenant: &str, key: &str, body: &[u8]) -> Result<ActiveSet> {
    let bad = |source| Error::BadActiveSet {
        tenant: tenant.to_string(),
        source,
    };
    let value: serde_json::Value = serde_json::from_slice(body).map_err(bad)?;
    pagestore::format::json_format("ActiveSet", key, &value, ACTIVESET_FORMAT)?;
    serde_json::from_value(value).map_err(bad)
}

impl Worker {
    /// What `pico tenant activeset NAME` shows.
    pub async fn activeset_summary(&self, name: &str) -> Result<ActiveSetSummary> {
        self.slot(name)?;
        let set = load_activeset(&self.store, name)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// One stored before ActiveSets carried a format reads as format 1; what is stored now says
    /// its format; a newer one is refused by its key and both versions.
    #[tokio::test]
    async fn stored_activesets_carry_a_format_and_a_newer_one_is_refused() {
        let home = tempfile::tempdir().unwrap();
        let store = PageStore::open(&pagestore::StoreConfig::embedded(home.path()))
            .await
            .unwrap();
        let mut set = ActiveSet::new("web");
        set.record(RestoreTrace::default(), 4);
        let unversioned = serde_json::to_vec(&set).unwrap();
        store
            .put_meta(ACTIVESET_KIND, "web", &unversioned)
            .await
            .unwrap();
        let loaded = load_activeset(&store, "web").await.unwrap().unwrap();
        assert_eq!((loaded.tenant.as_str(), loaded.restores.len()), ("web", 1));
        tokio::time::sleep(Duration::from_millis(2)).await;
        store_activeset(&store, "web", &set).await.unwrap();
        let body = store
            .latest_meta(ACTIVESET_KIND, "web")
            .await
            .unwrap()
            .unwrap();
        assert!(body.starts_with(br#"{"format":1,"tenant":"web""#));
        assert_eq!(
            load_activeset(&store, "web")
                .await
                .unwrap()
                .unwrap()
                .restores
                .len(),
            1
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
        store
            .put_meta(ACTIVESET_KIND, "web", br#"{"format":2,"tenant":"web"}"#)
            .await
            .unwrap();
        let err = load_activeset(&store, "web").await.unwrap_err();
        assert!(
            matches!(&err, Error::Store(pagestore::Error::UnsupportedVersion { object, found: 2, supported: 1, .. })
                if object.starts_with("meta/activeset/web/")),
            "{err}"
        );
    }

    /// A restarted worker plans a tenant's first swap-in from the copy of its ActiveSet in the
    /// tenant's directory, sending nothing to the cold tier; a torn copy is not used.
    #[tokio::test]
    async fn a_restarted_worker_reads_the_tenants_activeset_from_its_directory() {
        let (_home, store, dirs, set) = tenant_web_with_a_set().await;
        let slot = TenantSlot::new(dirs.clone(), slot_info(), &[]);
        keep_on_disk(&dirs.activeset_file(), &encode("web", &set).unwrap());

        let cold_reads = || {
            let c = &store.cold().counters;
            (
                c.gets.load(std::sync::atomic::Ordering::Relaxed),
                c.lists.load(std::sync::atomic::Ordering::Relaxed),
            )
        };
        let before = cold_reads();
        let own = own_activeset(&store, &slot, "web").await.unwrap().unwrap();
        assert_eq!(own.restores.len(), 1);
        assert!(slot.kept_activeset().is_some(), "kept for the next swap-in");
        assert_eq!(cold_reads(), before, "nothing read from the cold tier");

        // Torn: the store's copy (none here) is read instead.
        let body = std::fs::read(dirs.activeset_file()).unwrap();
        std::fs::write(dirs.activeset_file(), &body[..body.len() / 2]).unwrap();
        assert!(on_disk(&dirs.activeset_file(), "web").is_none());
        let fresh = TenantSlot::new(dirs.clone(), slot_info(), &[]);
        assert!(own_activeset(&store, &fresh, "web")
            .await
            .unwrap()
            .is_none());
    }

    /// A set only the store has (stored by a worker that kept no copy) is read from the cold
    /// tier once: then held, and copied to the tenant's directory for a restarted worker.
    #[tokio::test]
    async fn a_set_read_from_the_store_is_held_and_copied_to_the_tenants_directory() {
        let (_home, store, dirs, set) = tenant_web_with_a_set().await;
        store_activeset(&store, "web", &set).await.unwrap();

        let slot = TenantSlot::new(dirs.clone(), slot_info(), &[]);
        let gets = || {
            store
                .cold()
                .counters
                .gets
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        let own = own_activeset(&store, &slot, "web").await.unwrap().unwrap();
        assert_eq!(own.restores.len(), 1);
        let after_first = gets();
        let again = own_activeset(&store, &slot, "web").await.unwrap().unwrap();
        assert_eq!(again.restores.len(), 1);
        assert_eq!(gets(), after_first, "held: the second read sends nothing");
        let copy = on_disk(&dirs.activeset_file(), "web").expect("copied to the directory");
        assert_eq!(copy.restores.len(), 1);
    }

    /// A store in a temporary home, the directory of tenant `web` in it, and a set of one
    /// restore (not stored anywhere yet).
    async fn tenant_web_with_a_set() -> (
        tempfile::TempDir,
        PageStore,
        crate::tenant::TenantDirs,
        ActiveSet,
    ) {
        let home = tempfile::tempdir().unwrap();
        let store = PageStore::open(&pagestore::StoreConfig::embedded(home.path()))
            .await
            .unwrap();
        let dirs = crate::tenant::TenantDirs::new(&home.path().join("tenants"), "web");
        std::fs::create_dir_all(&dirs.root).unwrap();
        let mut set = ActiveSet::new("web");
        set.record(RestoreTrace::default(), 4);
        (home, store, dirs, set)
    }

    fn slot_info() -> crate::tenant::TenantInfo {
        crate::tenant::TenantInfo::started(
            crate::tenant::TenantSpec::new("web", 8080, vec!["app".into()]),
            1,
            vec![],
            None,
        )
    }

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
