//! Manifests this process decoded lately, by checkpoint id: the full manifests that deltas are
//! read against ([`crate::manifest`]), and when each checkpoint was made and against which base
//! (what retention asks of every checkpoint of a tenant after each ingest).
//!
//! Manifests are immutable and named by their bytes, so an entry is never stale; the cache is
//! bounded by dropping everything when it fills (it refills in a few reads).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::manifest::{CheckpointId, CheckpointRef, Manifest};

/// Entries of each kind kept before the cache starts over.
const MAX_ENTRIES: usize = 4096;

/// When a checkpoint was made and the full manifest it is written against (if a delta).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestInfo {
    pub created_ms: u64,
    pub base: Option<CheckpointRef>,
}

#[derive(Default)]
pub(crate) struct ManifestCache {
    full: Mutex<HashMap<CheckpointId, Arc<Manifest>>>,
    info: Mutex<HashMap<CheckpointId, ManifestInfo>>,
}

impl ManifestCache {
    pub(crate) fn full(&self, id: &CheckpointId) -> Option<Arc<Manifest>> {
        lock(&self.full).get(id).cloned()
    }

    pub(crate) fn put_full(&self, id: CheckpointId, manifest: Arc<Manifest>) {
        insert(&mut lock(&self.full), id, manifest);
    }

    pub(crate) fn info(&self, id: &CheckpointId) -> Option<ManifestInfo> {
        lock(&self.info).get(id).cloned()
    }

    pub(crate) fn put_info(&self, id: CheckpointId, info: ManifestInfo) {
        insert(&mut lock(&self.info), id, info);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn insert<V>(map: &mut HashMap<CheckpointId, V>, id: CheckpointId, value: V) {
    if map.len() >= MAX_ENTRIES {
        map.clear();
    }
    map.insert(id, value);
}
