//! Store-wide accounting: what was ingested, what is stored, and the ratio between them.

use serde::Serialize;
use std::collections::HashSet;
use std::sync::atomic::Ordering;

use crate::error::Result;
use crate::manifest::FileContent;
use crate::store::PageStore;

#[derive(Clone, Debug, Default, Serialize)]
pub struct StoreStats {
    pub checkpoints: u64,
    pub tenants: u64,
    /// Bytes of all ingested page files, over all checkpoints.
    pub logical_bytes: u64,
    pub pages_total: u64,
    pub pages_zero: u64,
    /// Distinct non-zero pages stored.
    pub pages_unique: u64,
    /// Bytes the store occupies in the cold tier (packs and manifests).
    pub stored_bytes: u64,
    pub pack_bytes: u64,
    pub manifest_bytes: u64,
    pub packs: u64,
    /// Packs still in ingest's fast encoding (lz4 page by page), waiting to be recompressed
    /// into dense zstd frames ([`crate::recompress`]; `pico store gc` finishes them), and their
    /// bytes. Zero once the store has settled.
    pub packs_pending: u64,
    pub pending_bytes: u64,
    /// Locality packs (extra copies of the pages restores read first, see
    /// `pagestore::locality`) and their bytes: storage traded for fewer cold GETs.
    pub locality_packs: u64,
    pub locality_bytes: u64,
    /// logical_bytes / stored_bytes.
    pub reduction: f64,
    pub hot: HotStats,
    pub local: Option<LocalStats>,
    pub cold: ColdStats,
}

/// Per-tier figures of this process.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TierStats {
    pub hot: HotStats,
    pub local: Option<LocalStats>,
    pub cold: ColdStats,
}

/// The memory tier since this process opened the store.
#[derive(Clone, Debug, Default, Serialize)]
pub struct HotStats {
    pub pages: u64,
    pub bytes: u64,
    pub max_bytes: u64,
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    /// Pages dropped because nobody read them for `[hot] ttl_ms`.
    pub dropped_unread: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ColdStats {
    /// `dir` or `s3`.
    pub kind: String,
    /// Where: the directory, or `endpoint/bucket/prefix`.
    pub location: String,
    pub gets: u64,
    pub get_bytes: u64,
    pub puts: u64,
    pub put_bytes: u64,
    pub lists: u64,
    /// Pages decoded from cold reads, the ranged GETs that carried them (after coalescing), and
    /// reads that joined a GET already in flight (single flight).
    pub pages_read: u64,
    pub page_requests: u64,
    pub flight_joins: u64,
    /// Requests retried after a transient failure.
    pub retries: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct LocalStats {
    /// `sled` or `fjall`.
    pub engine: String,
    pub pages: u64,
    /// Bytes cached (encoded pages plus their headers): what `max_bytes` bounds.
    pub bytes: u64,
    /// Bytes the engine's files take on disk, and per cached byte (the engine's overhead:
    /// journal, tombstones and stale blobs not yet compacted away).
    pub disk_bytes: u64,
    pub disk_per_cached_byte: f64,
    pub max_bytes: u64,
    pub hits: u64,
    pub misses: u64,
    /// Cached pages that failed their hash (dropped and read again from cold).
    pub corrupt: u64,
    pub evictions: u64,
}

impl PageStore {
    pub async fn stats(&self) -> Result<StoreStats> {
        self.refresh_catalog().await?;
        let mut s = StoreStats::default();
        let mut tenants = HashSet::new();
        for obj in self.cold().list("").await? {
            if obj.key.starts_with("packs/") {
                s.packs += 1;
                s.pack_bytes += obj.size;
                if crate::pack::PackId::from_object_key(&obj.key).is_some() {
                    match self.read_pack_index(&obj.key, obj.size).await {
                        Ok(entries) if crate::pack::is_fast(&entries) => {
                            s.packs_pending += 1;
                            s.pending_bytes += obj.size;
                        }
                        Ok(_) => {}
                        // Replaced by a recompression since the listing: no longer pending.
                        Err(e) if e.is_not_found() => {}
                        Err(e) => return Err(e),
                    }
                }
            } else if obj.key.starts_with("manifests/") {
                s.manifest_bytes += obj.size;
            } else if obj.key.starts_with("locality/") {
                s.locality_packs += 1;
                s.locality_bytes += obj.size;
            }
            s.stored_bytes += obj.size;
        }
        for checkpoint in self.checkpoints().await? {
            let manifest = self.manifest(&checkpoint).await?;
            tenants.insert(checkpoint.tenant);
            s.checkpoints += 1;
            for f in &manifest.files {
                if let FileContent::Paged(pages) = &f.content {
                    s.logical_bytes += f.size;
                    s.pages_total += pages.len() as u64;
                    s.pages_zero += pages.iter().filter(|p| p.is_zero()).count() as u64;
                }
            }
        }
        s.tenants = tenants.len() as u64;
        let counters = self.stats_counters();
        s.hot = counters.hot;
        s.local = counters.local;
        s.cold = counters.cold;
        s.pages_unique = self.catalog().len() as u64;
        s.reduction = if s.stored_bytes > 0 {
            s.logical_bytes as f64 / s.stored_bytes as f64
        } else {
            0.0
        };
        Ok(s)
    }

    /// The tiers' counters and sizes only (no listing of the cold tier).
    pub fn stats_counters(&self) -> TierStats {
        let hot = self.hot();
        let hot_stats = HotStats {
            pages: hot.len() as u64,
            bytes: (hot.len() * crate::page::PAGE_SIZE) as u64,
            max_bytes: hot.max_bytes(),
            hits: hot.counters.hits.load(Ordering::Relaxed),
            misses: hot.counters.misses.load(Ordering::Relaxed),
            evictions: hot.counters.evictions.load(Ordering::Relaxed),
            dropped_unread: hot.counters.dropped_unread.load(Ordering::Relaxed),
        };
        let c = &self.cold().counters;
        let cold = ColdStats {
            kind: self.cold().kind().to_string(),
            location: self.cold().describe(),
            gets: c.gets.load(Ordering::Relaxed),
            get_bytes: c.get_bytes.load(Ordering::Relaxed),
            puts: c.puts.load(Ordering::Relaxed),
            put_bytes: c.put_bytes.load(Ordering::Relaxed),
            lists: c.lists.load(Ordering::Relaxed),
            pages_read: self.counters().cold_pages.load(Ordering::Relaxed),
            page_requests: self.counters().cold_requests.load(Ordering::Relaxed),
            flight_joins: self.counters().flight_joins.load(Ordering::Relaxed),
            retries: self.cold().retries(),
        };
        let local = self.local().map(|local| {
            let (pages, bytes) = local.usage().unwrap_or((0, 0));
            let disk_bytes = local.disk_bytes().unwrap_or(0);
            LocalStats {
                engine: local.engine().to_string(),
                pages,
                bytes,
                disk_bytes,
                disk_per_cached_byte: if bytes == 0 {
                    0.0
                } else {
                    disk_bytes as f64 / bytes as f64
                },
                hits: self.counters().local_hits.load(Ordering::Relaxed),
                misses: self.counters().local_misses.load(Ordering::Relaxed),
                corrupt: self.counters().local_corrupt.load(Ordering::Relaxed),
                max_bytes: local.max_bytes(),
                evictions: local.evictions(),
            }
        });
        TierStats {
            hot: hot_stats,
            local,
            cold,
        }
    }
}

/// The store's request counters right now, without touching any tier (for benchmarks that
/// measure the traffic of one operation).
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct LiveCounters {
    pub cold_gets: u64,
    pub cold_get_bytes: u64,
    /// Pages fetched from the cold tier (each once per GET that brought it).
    pub cold_pages: u64,
    pub cold_puts: u64,
    pub cold_put_bytes: u64,
    /// Cold reads (GET, ranged GET, LIST) under way right now.
    #[serde(default)]
    pub cold_reads_in_flight: u64,
    /// Waves of cold reads: times the reads in flight went from none to one, i.e. sequential
    /// round trips to the cold tier (overlapping reads are one; [`crate::cold::ReadWaves`]).
    #[serde(default)]
    pub cold_waves: u64,
    /// Waves of waits on cold reads by the readers something waits for (a restore, a tenant's
    /// faults): round trips waited for one after another ([`crate::cold::ColdWaits`]).
    #[serde(default)]
    pub cold_waits: u64,
    /// The background recompression runs now ([`PageStore::recompressing`]): its cold reads
    /// count in the figures above.
    #[serde(default)]
    pub recompressing: bool,
    /// Pages are still queued for the local tier ([`PageStore::caching_locally`]).
    #[serde(default)]
    pub caching_locally: bool,
    pub local_hits: u64,
    pub local_misses: u64,
    /// Pages a peer worker sent (they passed their check), and their encoded bytes.
    #[serde(default)]
    pub peer_pages: u64,
    #[serde(default)]
    pub peer_bytes: u64,
}

impl PageStore {
    pub fn live_counters(&self) -> LiveCounters {
        let c = &self.cold().counters;
        LiveCounters {
            cold_gets: c.gets.load(Ordering::Relaxed),
            cold_get_bytes: c.get_bytes.load(Ordering::Relaxed),
            cold_pages: self.counters().cold_pages.load(Ordering::Relaxed),
            cold_puts: c.puts.load(Ordering::Relaxed),
            cold_put_bytes: c.put_bytes.load(Ordering::Relaxed),
            cold_reads_in_flight: c.read_waves.in_flight(),
            cold_waves: c.read_waves.waves(),
            cold_waits: c.read_waits.waves(),
            recompressing: self.recompressing(),
            caching_locally: self.caching_locally(),
            local_hits: self.counters().local_hits.load(Ordering::Relaxed),
            local_misses: self.counters().local_misses.load(Ordering::Relaxed),
            peer_pages: self.counters().peer_pages.load(Ordering::Relaxed),
            peer_bytes: self.counters().peer_bytes.load(Ordering::Relaxed),
        }
    }
}
