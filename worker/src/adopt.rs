//! Taking over a tenant that another worker hosted (its worker died, or it moves): from one of
//! its checkpoints in the shared cold tier, which carries its record and its files
//! (`tenant_files`). The tenant is registered here asleep, its files put back where it had them,
//! its port served: its next connection (or the hub's wake-up) restores it as any swap-in does,
//! its pages coming through this worker's tiers.
//!
//! The hub asks candidate workers how much of a checkpoint they hold ([`HeldPages`]) to place
//! the tenant where its pages already are.
//!
//! The checkpoint to adopt is named by the caller (the hub records each tenant's newest durable
//! one), never guessed from what this worker may have cached.

use std::sync::Arc;

use pagestore::manifest::Manifest;
use tracing::info;

use crate::error::{Error, Result};
use crate::host::{TenantSlot, Worker};
use crate::tenant::{TenantDirs, TenantInfo, TenantState};
use crate::tenant_files::{record_of, unpack, FILES_ARCHIVE, RECORD_FILE};

impl Worker {
    /// Registers tenant `name` from its checkpoint `checkpoint` (an id), asleep; its record as
    /// this worker keeps it. Pages this worker does not hold are read from `peer` (the worker
    /// it moves from) first, then from the cold tier.
    pub async fn adopt(
        self: &Arc<Self>,
        name: &str,
        checkpoint: &str,
        peer: Option<&crate::protocol::PeerRef>,
    ) -> Result<TenantInfo> {
        if let Ok(slot) = self.tenants.get(name) {
            // An older record of a tenant that lived here before: the checkpoint named wins.
            // One that runs here is not taken over twice.
            if slot.runtime.lock().await.info.state != TenantState::SwappedOut {
                return Err(Error::TenantExists(name.to_string()));
            }
            self.release(name).await?;
        }
        if let Some(peer) = peer {
            self.read_from_peer(name, peer);
        }
        let at = self.store.resolve(checkpoint).await?;
        if at.tenant != name {
            return Err(not_adoptable(
                name,
                checkpoint,
                format!("it is a checkpoint of {}", at.tenant),
            ));
        }
        let manifest = self.store.manifest(&at).await?;
        let record = self.whole_file(&manifest, RECORD_FILE).await;
        let record = record.ok_or_else(|| {
            not_adoptable(
                name,
                checkpoint,
                "it holds no tenant record (written by a worker before tenants' files travelled)"
                    .into(),
            )
        })?;
        let mut info = record_of(&record)?;
        if info.name != name {
            return Err(not_adoptable(
                name,
                checkpoint,
                format!("its record names {}", info.name),
            ));
        }
        if info.user_namespace.is_some() {
            return Err(not_adoptable(
                name,
                checkpoint,
                "it runs in a user namespace, whose ids are this worker's to give".into(),
            ));
        }
        asleep_at(&mut info, &at);
        let listener = self.take_public_port(name, info.port)?;
        let dirs = TenantDirs::new(&self.config.tenants_dir, name);
        let cwd = info.cwd(&dirs);
        for dir in [&dirs.root, &cwd] {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        // A copy of its ActiveSet from an earlier stay here is older than the store's.
        let _ = std::fs::remove_file(dirs.activeset_file());
        // Its quota travels in its record: its files go into a filesystem of that size here.
        if let Some(bytes) = info.disk_quota {
            crate::disk_quota::ensure_mounted(name, &dirs, &cwd, bytes).await?;
        }
        if let Some(archive) = self.whole_file(&manifest, FILES_ARCHIVE).await {
            let (cwd, log) = (cwd.clone(), dirs.log());
            tokio::task::spawn_blocking(move || unpack(&archive, &cwd, &log))
                .await
                .map_err(|source| Error::TaskFailed {
                    task: "tenant files",
                    source,
                })??;
        }
        crate::lifecycle::make_netns(&dirs).await?;
        info.save(&dirs)?;
        let slot = Arc::new(TenantSlot::new(dirs, info.clone(), &self.secrets));
        if let Some(view) = &slot.view {
            crate::lifecycle::prepare_view(&slot.dirs, view)
                .map_err(|e| Error::io(slot.dirs.view_root(), e))?;
        }
        let slot = self.tenants.insert_slot(name, slot);
        self.serve(&slot, listener);
        info!(
            tenant = name,
            checkpoint,
            generation = at.generation,
            "tenant adopted, asleep"
        );
        Ok(info)
    }

    /// How many of checkpoint `checkpoint`'s pages this worker holds, of how many.
    pub async fn held(&self, checkpoint: &str) -> Result<HeldPages> {
        let at = self.store.resolve(checkpoint).await?;
        let manifest = self.store.manifest(&at).await?;
        let store = self.store.clone();
        let (pages, held) = tokio::task::spawn_blocking(move || store.held_pages(&manifest))
            .await
            .map_err(|source| Error::TaskFailed {
                task: "held pages",
                source,
            })?;
        Ok(HeldPages { pages, held })
    }

    /// The whole content of `file` of `manifest`, if it has one (and it reads).
    async fn whole_file(&self, manifest: &Manifest, file: &str) -> Option<Vec<u8>> {
        let entry = manifest.files.iter().find(|f| f.name == file)?;
        let size = usize::try_from(entry.size).ok()?;
        match self.store.read_file_at(entry, 0, size).await {
            Ok(bytes) => Some(bytes.to_vec()),
            Err(e) => {
                tracing::warn!(file, error = %e, "could not read a file of the checkpoint");
                None
            }
        }
    }
}

/// How much of a checkpoint a worker holds: distinct non-zero pages, and those in its memory or
/// local tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HeldPages {
    pub pages: u64,
    pub held: u64,
}

/// `info`, a record as a worker saved it with a checkpoint, made the record of that tenant
/// asleep at checkpoint `at`, on a worker where nothing of it ran yet.
fn asleep_at(info: &mut TenantInfo, at: &pagestore::CheckpointRef) {
    info.state = TenantState::SwappedOut;
    info.pid = None;
    info.checkpoint = Some(at.id.to_string());
    info.generation = Some(at.generation);
    info.staging = None;
    info.pages_pending = false;
    info.restore_failures = 0;
    info.failure = None;
    info.last_swap_in = None;
    info.last_fill = None;
    info.last_reads = None;
    info.last_fill_wait = None;
    info.last_active = Some(pagestore::clock::now_ms());
}

fn not_adoptable(name: &str, checkpoint: &str, why: String) -> Error {
    Error::NotAdoptable {
        name: name.to_string(),
        checkpoint: checkpoint.to_string(),
        why,
    }
}
