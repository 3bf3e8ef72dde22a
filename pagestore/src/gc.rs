//! Lifetime of stored data: retention (keep the last few checkpoints of a tenant and one a day
//! for a week, and the base of each kept delta manifest), forgetting a tenant, and garbage
//! collection of the pages no retained checkpoint references.
//!
//! GC marks every page of every manifest, then sweeps packs: a pack with no live page is deleted;
//! a pack still in ingest's fast encoding has its live pages rewritten dense
//! ([`crate::recompress`]);
//! a pack whose live bytes fall under `[gc] repack_below` of its page bytes has its live pages
//! copied into new packs, which are uploaded *before* the old pack is deleted, so a crash at any
//! moment leaves at worst duplicate or unreferenced packs, never a missing page.
//!
//! It runs beside ingests and never holds one up ([`crate::lock`]). It works on the packs listed
//! when it starts (later ones are the next gc's), announces the pages of those packs that no
//! manifest references (its *doomed* set: ingests that start from then on store their own copies
//! rather than reference them), waits for the ingests already in flight to commit, marks what
//! their manifests reference as live too, and only then sweeps. So no ingest can reference a page
//! it deletes. It excludes recompression and other gcs (both rewrite packs).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde::Serialize;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::blocking::{background, blocking};
use crate::config::RetentionConfig;
use crate::error::Error;
use crate::error::Result;
use crate::locality::LocalitySource;
use crate::lock::{LockKind, StoreLock};
use crate::manifest::{CheckpointId, CheckpointRef};
use crate::pack::{self, PackBuilder, PackId};
use crate::page::PageSet;
use crate::progress::{Progress, SILENT};
use crate::recompress::{rewrite_pages, DenseWriter};
use crate::store::PageStore;

const DAY_MS: u64 = 24 * 3600 * 1000;
/// How long a gc waits for the ingests in flight when it announced its doomed pages (a swap-out
/// takes seconds; a process killed mid-ingest leaves a lock that is stale at once on this host,
/// and after an hour on another): then it gives up, having deleted nothing.
const INGEST_WAIT_LIMIT: Duration = Duration::from_secs(600);
/// The longest a gc pauses before one pack while its caller is busy ([`GcRun::busy`]).
const BUSY_PAUSE_MAX: Duration = Duration::from_secs(30);
const BUSY_POLL: Duration = Duration::from_millis(200);

/// How one gc runs.
pub struct GcRun<'a> {
    /// Its CPU work (decoding and recompressing) on a thread at nice 19: a worker's gc.
    pub background: bool,
    /// Told of each stage (`mark`, `plan`, `sweep`) and each pack.
    pub progress: &'a dyn Progress,
    /// Asked before each pack: while it answers true (say, a swap runs) the gc pauses, up to 30 s
    /// per pack, so that its cold-tier traffic yields to the swaps' without starving.
    pub busy: Option<&'a (dyn Fn() -> bool + Send + Sync)>,
    /// Looked at before each pack and while it waits for ingests: once set, the gc gives its
    /// lock back and ends with [`Error::Stopped`], having deleted nothing it has not replaced.
    pub stop: Option<&'a std::sync::atomic::AtomicBool>,
}

impl GcRun<'_> {
    fn check_stop(&self) -> Result<()> {
        match self.stop {
            Some(stop) if stop.load(std::sync::atomic::Ordering::SeqCst) => {
                Err(Error::Stopped("gc"))
            }
            _ => Ok(()),
        }
    }
}

impl Default for GcRun<'_> {
    fn default() -> Self {
        GcRun {
            background: false,
            progress: &SILENT,
            busy: None,
            stop: None,
        }
    }
}

/// The store's record of its last gc (by any process): `meta/gc/store/`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GcRecord {
    /// When it ended (ms since the epoch).
    pub finished_ms: u64,
    pub host: String,
    pub report: GcReport,
}

/// What one gc did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct GcReport {
    pub manifests: u64,
    pub live_pages: u64,
    pub packs_before: u64,
    pub packs_deleted: u64,
    pub packs_repacked: u64,
    /// Packs of ingest's fast encoding rewritten dense ([`crate::recompress`]).
    pub packs_recompressed: u64,
    pub packs_written: u64,
    /// Page copies dropped (unreferenced, or a second copy of a page).
    pub pages_dropped: u64,
    pub pack_bytes_before: u64,
    pub pack_bytes_after: u64,
    /// Locality packs deleted because no manifest names them.
    pub locality_deleted: u64,
    /// Pages announced doomed (referenced by no manifest at the first mark).
    #[serde(default)]
    pub pages_doomed: u64,
    /// Manifests committed while it waited for the ingests in flight, marked after the wait.
    #[serde(default)]
    pub manifests_late: u64,
    /// How long it waited for those ingests.
    #[serde(default)]
    pub waited_ms: u64,
    pub elapsed_ms: u64,
}

impl GcReport {
    /// The cold tier's pack bytes this gc freed.
    pub fn freed_bytes(&self) -> u64 {
        self.pack_bytes_before.saturating_sub(self.pack_bytes_after)
    }
}

impl PageStore {
    /// Deletes the checkpoints of `tenant` beyond the newest `keep` (0 keeps all), except the
    /// bases of those kept. Returns the checkpoints deleted. Their pages go at the next gc.
    pub async fn apply_retention(&self, tenant: &str, keep: u64) -> Result<Vec<CheckpointRef>> {
        let policy = RetentionConfig {
            keep_last: keep,
            keep_daily: 0,
        };
        self.apply_retention_policy(tenant, &policy).await
    }

    /// Keeps the newest `keep_last` checkpoints of `tenant` (0 keeps all), the newest of each of
    /// the last `keep_daily` days (UTC), and the full manifest each kept delta is written
    /// against; deletes the rest. Returns the checkpoints deleted. Their pages go at the next gc.
    pub async fn apply_retention_policy(
        &self,
        tenant: &str,
        policy: &RetentionConfig,
    ) -> Result<Vec<CheckpointRef>> {
        if policy.keep_last == 0 {
            return Ok(Vec::new());
        }
        let mut mine: Vec<CheckpointRef> = self
            .checkpoints()
            .await?
            .into_iter()
            .filter(|c| c.tenant == tenant)
            .collect();
        mine.sort_by_key(|c| std::cmp::Reverse(c.generation));
        let mut keep: HashSet<CheckpointId> = mine
            .iter()
            .take(policy.keep_last as usize)
            .map(|c| c.id.clone())
            .collect();
        if policy.keep_daily > 0 {
            let today = crate::clock::now_ms() / DAY_MS;
            let mut days = HashSet::new();
            for c in &mine {
                let day = self.manifest_info(c).await?.created_ms / DAY_MS;
                if today.saturating_sub(day) >= policy.keep_daily {
                    break; // newest first: every later one is older still
                }
                if days.insert(day) {
                    keep.insert(c.id.clone());
                }
            }
        }
        // A kept delta needs its base to be read.
        for c in &mine {
            if keep.contains(&c.id) {
                if let Some(base) = self.manifest_info(c).await?.base {
                    keep.insert(base.id);
                }
            }
        }
        let old: Vec<CheckpointRef> = mine.into_iter().filter(|c| !keep.contains(&c.id)).collect();
        for c in &old {
            self.cold().delete(&c.object_key()).await?;
            self.forget_kept_manifest(&c.id);
            info!(tenant, generation = c.generation, checkpoint = %c.id, "retention: checkpoint dropped");
        }
        // Their locality packs are gone already: each commit drops all but the newest
        // checkpoint's (`crate::locality`), and gc sweeps any no manifest names.
        Ok(old)
    }

    /// Deletes every checkpoint of `tenant`. Returns them. Their pages go at the next gc.
    pub async fn forget(&self, tenant: &str) -> Result<Vec<CheckpointRef>> {
        let mine: Vec<CheckpointRef> = self
            .checkpoints()
            .await?
            .into_iter()
            .filter(|c| c.tenant == tenant)
            .collect();
        for c in &mine {
            self.cold().delete(&c.object_key()).await?;
            self.forget_kept_manifest(&c.id);
        }
        self.drop_locality(tenant, |_| true).await;
        self.drop_whole_image(tenant).await;
        info!(tenant, checkpoints = mine.len(), "tenant forgotten");
        Ok(mine)
    }

    /// Mark and sweep, beside ingests ([`crate::gc`]).
    pub async fn gc(&self) -> Result<GcReport> {
        self.gc_with(&GcRun::default()).await
    }

    /// [`Self::gc`], run as `run` says. A successful one is recorded ([`Self::last_gc`]).
    pub async fn gc_with(&self, run: &GcRun<'_>) -> Result<GcReport> {
        let lock = self.lock(LockKind::Gc).await?;
        let result = self
            .gc_locked(&lock, run)
            .instrument(info_span!("gc"))
            .await;
        self.unlock(lock).await?;
        let report = result?;
        if let Err(e) = self.record_gc(&report).await {
            warn!(error = %e, "the gc is not recorded as the store's last");
        }
        Ok(report)
    }

    /// The store's last successful gc, by any process.
    pub async fn last_gc(&self) -> Result<Option<GcRecord>> {
        let Some(body) = self.latest_meta("gc", "store").await? else {
            return Ok(None);
        };
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| Error::BadManifest(format!("the store's gc record: {e}")))
    }

    async fn record_gc(&self, report: &GcReport) -> Result<()> {
        let record = GcRecord {
            finished_ms: crate::clock::now_ms(),
            host: crate::lock::host(),
            report: report.clone(),
        };
        let body = serde_json::to_vec(&record).map_err(|source| Error::Encode {
            what: "the gc record",
            source,
        })?;
        self.put_meta("gc", "store", &body).await
    }

    async fn gc_locked(&self, lock: &StoreLock, run: &GcRun<'_>) -> Result<GcReport> {
        let started = Instant::now();
        let began = std::time::SystemTime::now();
        let mut r = GcReport::default();
        // What this gc may delete: the packs (those of the catalog's refresh) and locality
        // packs there are now. Those written later (by ingests beside it) reference pages this
        // gc may not have marked.
        let packs: Vec<_> = self
            .read_path
            .refresh_catalog_listed()
            .await?
            .into_iter()
            .filter_map(|o| PackId::from_object_key(&o.key).map(|p| (p, o)))
            .collect();
        let localities = self.cold().list("locality/").await?;

        // Mark. Any manifest that cannot be read stops the gc: sweeping on a partial mark would
        // delete pages that checkpoint needs.
        let mut mark = Mark::default();
        run.progress.stage("mark", 0, 0);
        self.mark(&mut mark, run.progress).await?;
        r.manifests = mark.read.len() as u64;
        // Manifests this machine kept of checkpoints another process dropped since (kept
        // before this gc began: their checkpoints were listed if they still exist).
        if let Some(kept) = &self.kept_manifests {
            kept.retain(began, |id| mark.read.contains(id));
        }

        // The pages of those packs no manifest references: announced before anything goes.
        run.progress.stage("plan", packs.len() as u64, 0);
        let mut doomed = PageSet::default();
        for (_, obj) in &packs {
            let entries = self.read_pack_index(&obj.key, obj.size).await?;
            doomed.extend(
                entries
                    .iter()
                    .map(|e| e.id)
                    .filter(|id| !mark.live.contains(id)),
            );
            run.progress.advance(1, 0);
        }
        r.pages_doomed = doomed.len() as u64;
        self.announce_doomed(lock, &doomed).await?;
        drop(doomed);
        let waiting = Instant::now();
        self.wait_for_ingests(INGEST_WAIT_LIMIT, run.stop).await?;
        r.waited_ms = waiting.elapsed().as_millis() as u64;
        // What the ingests begun before the announcement committed: they may reference pages
        // announced doomed.
        self.mark(&mut mark, run.progress).await?;
        r.manifests_late = mark.read.len() as u64 - r.manifests;
        r.manifests = mark.read.len() as u64;
        r.live_pages = mark.live.len() as u64;
        debug!(
            doomed = r.pages_doomed,
            late = r.manifests_late,
            waited_ms = r.waited_ms,
            "gc marked"
        );
        self.sweep(&packs, std::mem::take(&mut mark.live), &mut r, run)
            .await?;

        // Locality packs no manifest names: a killed ingest's, or one whose manifest went.
        for obj in localities {
            if !mark.live_locality.contains(&obj.key) {
                self.cold().delete(&obj.key).await?;
                r.locality_deleted += 1;
            }
        }
        r.elapsed_ms = started.elapsed().as_millis() as u64;
        info!(
            manifests = r.manifests,
            live = r.live_pages,
            deleted = r.packs_deleted,
            repacked = r.packs_repacked,
            dropped = r.pages_dropped,
            waited_ms = r.waited_ms,
            "gc done"
        );
        Ok(r)
    }

    /// Marks the pages and locality packs of every manifest `mark` has not read yet. A manifest
    /// deleted between the listing and its read (retention beside this gc) is skipped: its
    /// checkpoint is gone.
    async fn mark(&self, mark: &mut Mark, progress: &dyn Progress) -> Result<()> {
        for c in self.checkpoints().await? {
            if mark.read.contains(&c.id) {
                continue;
            }
            let m = match self.manifest(&c).await {
                Ok(m) => m,
                Err(Error::ObjectNotFound(_)) => {
                    debug!(checkpoint = %c.id, "deleted while gc marked");
                    continue;
                }
                Err(e) => return Err(e),
            };
            mark.read.insert(c.id.clone());
            mark.live_locality
                .extend(LocalitySource::of(&m).map(|l| l.key));
            for f in &m.files {
                mark.live.extend(f.pages().iter().filter(|p| !p.is_zero()));
            }
            progress.advance(1, 0);
        }
        Ok(())
    }

    /// Sweeps `packs` (listed before the mark): deletes, recompresses or repacks each. A live
    /// page is kept in the first pack that holds it (taken out of `live` there: any further
    /// copy is dropped), and the
    /// catalog is pointed at the copy kept before any pack goes.
    async fn sweep(
        &self,
        packs: &[(PackId, crate::cold::ObjectMeta)],
        mut live: PageSet,
        r: &mut GcReport,
        run: &GcRun<'_>,
    ) -> Result<()> {
        // A pack still in ingest's fast encoding is rewritten dense whatever it holds (the
        // recompression that `pico store gc` finishes); a dense pack only when little of it
        // is live.
        let threshold = self.config.gc.repack_below;
        let total_bytes = packs.iter().map(|(_, o)| o.size).sum();
        run.progress.stage("sweep", packs.len() as u64, total_bytes);
        let mut doomed: Vec<(PackId, String)> = Vec::new();
        let mut written: HashSet<PackId> = HashSet::new();
        let mut writer = DenseWriter::new()?;
        for (pack, obj) in packs {
            let pack = *pack;
            pause_while_busy(run).await;
            run.check_stop()?;
            r.packs_before += 1;
            r.pack_bytes_before += obj.size;
            let entries = self.read_pack_index(&obj.key, obj.size).await?;
            let keep: Vec<_> = entries
                .iter()
                .filter(|e| live.remove(&e.id))
                .copied()
                .collect();
            let total: u64 = entries.iter().map(|e| e.stored_bytes()).sum();
            let kept: u64 = keep.iter().map(|e| e.stored_bytes()).sum();
            let fast = pack::is_fast(&entries);
            if !fast
                && (keep.len() == entries.len()
                    || (total > 0 && kept as f64 >= threshold * total as f64))
            {
                // Its copies of the pages it keeps are the ones read from now on.
                self.catalog().move_to_pack(pack, &keep);
                r.pack_bytes_after += obj.size;
                run.progress.advance(1, obj.size);
                continue;
            }
            r.pages_dropped += (entries.len() - keep.len()) as u64;
            if !keep.is_empty() {
                if fast {
                    r.packs_recompressed += 1;
                } else {
                    r.packs_repacked += 1;
                }
                let data = self.cold().get(&obj.key).await?;
                let key = obj.key.clone();
                let rewrite = move || {
                    rewrite_pages(&mut writer, &key, &data, &keep)?;
                    Ok(writer)
                };
                writer = match run.background {
                    true => background(rewrite).await?,
                    false => blocking(rewrite).await?,
                };
                for full in writer.take_full() {
                    let (id, len) = self.write_repacked(full).await?;
                    written.insert(id);
                    r.pack_bytes_after += len;
                    r.packs_written += 1;
                }
            }
            doomed.push((pack, obj.key.clone()));
            run.progress.advance(1, obj.size);
        }
        for last in blocking(move || writer.finish()).await? {
            let (id, len) = self.write_repacked(last).await?;
            written.insert(id);
            r.pack_bytes_after += len;
            r.packs_written += 1;
        }
        // Only now that every live page has a durable new home are old packs deleted.
        r.packs_deleted = self.delete_replaced(&doomed, &written).await? as u64;
        Ok(())
    }

    /// Uploads a pack of pages that live elsewhere too, and points the catalog at it.
    pub(crate) async fn write_repacked(&self, builder: PackBuilder) -> Result<(PackId, u64)> {
        let (pack, data, entries) = builder.finish();
        let len = self.put_pack(pack, data, &entries).await?;
        Ok((pack, len))
    }
}

/// What a gc has marked so far.
#[derive(Default)]
struct Mark {
    /// The checkpoints whose manifests were read.
    read: HashSet<CheckpointId>,
    live: PageSet,
    live_locality: HashSet<String>,
}

/// Waits while `run`'s caller is busy, up to [`BUSY_PAUSE_MAX`].
async fn pause_while_busy(run: &GcRun<'_>) {
    let Some(busy) = run.busy else {
        return;
    };
    let until = Instant::now() + BUSY_PAUSE_MAX;
    while busy() && Instant::now() < until {
        tokio::time::sleep(BUSY_POLL).await;
    }
}
