//! Per-tenant accounting of the storage bill: who owns which stored bytes, and what they cost.
//!
//! Deduplication makes "how much does tenant X cost" a real question: a page stored once may be
//! referenced by many tenants. Each tenant is charged the pages only it references (`unique`) in
//! full, and an equal share of each page it shares with others (`shared`, apportioned in whole
//! bytes so that the shares of a page add up to exactly its stored size). So over all tenants,
//! unique + shared = the stored bytes of every referenced page, each counted once. Pack indexes
//! and pages no checkpoint references any more (garbage until `gc`) are overhead, billed to the
//! operator in the total.
//!
//! Cold-tier PUTs of the last period are derived from the store's own history (each manifest, and
//! each pack first referenced by a manifest created in the period, was one PUT); GETs are not
//! recorded durably yet, so they are `None`.
//!
//! [`report`] prices an accounting for `pico report cost`, and [`html`] renders that report as
//! one self-contained page.

pub mod html;
pub mod report;

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::clock::now_ms;
use crate::error::Result;
use crate::manifest::{CheckpointRef, FileContent};
use crate::pack::PackId;
use crate::page::PageId;
use crate::store::PageStore;

/// Prices of the cold tier, for monthly cost estimates (the `[prices]` section of `pico.toml`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Prices {
    /// Storage, per GiB-month (S3 bills "GB" of 2^30 bytes).
    pub storage_gb_month: f64,
    /// Per 1000 PUT (also COPY, POST, LIST) requests.
    pub put_per_1000: f64,
    /// Per 1000 GET (and other read) requests.
    pub get_per_1000: f64,
    pub currency: String,
    /// Where the figures come from, shown in every report.
    pub source: String,
}

impl Default for Prices {
    fn default() -> Self {
        Prices {
            storage_gb_month: 0.023,
            put_per_1000: 0.005,
            get_per_1000: 0.0004,
            currency: "USD".into(),
            source: "AWS S3 Standard, us-east-1, first 50 TB tier: $0.023 per GB-month, \
                     $0.005 per 1000 PUT/COPY/POST/LIST, $0.0004 per 1000 GET \
                     (aws.amazon.com/s3/pricing, as published 2024-2026)"
                .into(),
        }
    }
}

const GIB: f64 = (1u64 << 30) as f64;

impl Prices {
    /// Monthly cost of keeping `bytes` and making `puts` and `gets` requests in a month.
    pub fn monthly(&self, bytes: u64, puts: u64, gets: Option<u64>) -> Cost {
        let storage = bytes as f64 / GIB * self.storage_gb_month;
        let put = puts as f64 / 1000.0 * self.put_per_1000;
        let get = gets.unwrap_or(0) as f64 / 1000.0 * self.get_per_1000;
        Cost {
            storage,
            requests: put + get,
            total: storage + put + get,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct Cost {
    pub storage: f64,
    pub requests: f64,
    pub total: f64,
}

/// Cold-tier requests in the accounting period.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct Requests {
    pub puts: u64,
    /// From the usage log (`usage.rs`): the cold GETs of swap-ins in the period. `None` when
    /// no log was consulted.
    pub gets: Option<u64>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct TenantUsage {
    pub name: String,
    pub checkpoints: u64,
    /// Bytes of the tenant's paged files over all its checkpoints (what it would cost undeduplicated).
    pub logical_bytes: u64,
    pub pages_total: u64,
    pub pages_zero: u64,
    /// Distinct non-zero pages the tenant references.
    pub pages_distinct: u64,
    /// Pages referenced by this tenant only.
    pub pages_unique: u64,
    /// Stored bytes of the pages only this tenant references.
    pub unique_bytes: u64,
    /// This tenant's share of the stored bytes of pages it shares with other tenants.
    pub shared_bytes: u64,
    /// Stored bytes of the pages it shares, not apportioned (what it would pay alone for them).
    pub shared_full_bytes: u64,
    /// Its manifests in the cold tier.
    pub manifest_bytes: u64,
    /// Its checkpoints' locality packs (extra copies of restore sets, `crate::locality`).
    pub locality_bytes: u64,
    /// unique + shared + manifest + locality bytes: what the tenant is charged for in the cold
    /// tier.
    pub stored_bytes: u64,
    /// Its pages cached in this machine's local tier (shared ones apportioned like `shared_bytes`);
    /// `None` when the local tier is disabled or held by a running worker.
    pub local_bytes: Option<u64>,
    pub requests: Requests,
}

/// Bytes held by one tier.
#[derive(Clone, Debug, Serialize)]
pub struct TierUsage {
    pub tier: String,
    pub kind: String,
    pub objects: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct TotalUsage {
    pub tenants: u64,
    pub checkpoints: u64,
    pub logical_bytes: u64,
    pub unique_bytes: u64,
    /// Stored bytes of pages shared by two or more tenants, each counted once.
    pub shared_bytes: u64,
    /// Stored bytes of every referenced page, each counted once (= unique + shared).
    pub page_bytes: u64,
    pub manifest_bytes: u64,
    /// Locality packs named by manifests.
    pub locality_bytes: u64,
    /// Pack bytes that are not referenced pages: pack headers and indexes, and unreferenced
    /// pages (reclaimed by `gc`).
    pub overhead_bytes: u64,
    /// Everything in the cold tier (= page + manifest + locality + overhead bytes).
    pub stored_bytes: u64,
    pub requests: Requests,
}

#[derive(Clone, Debug, Serialize)]
pub struct Accounting {
    pub tenants: Vec<TenantUsage>,
    pub total: TotalUsage,
    pub tiers: Vec<TierUsage>,
    pub period_days: u64,
}

impl Accounting {
    /// Fills in each tenant's cold GETs of the period (0 for a tenant with none) and the total.
    pub fn apply_gets(&mut self, gets: &HashMap<String, u64>) {
        let mut total = 0;
        for t in &mut self.tenants {
            let n = gets.get(&t.name).copied().unwrap_or(0);
            t.requests.gets = Some(n);
            total += n;
        }
        // GETs of tenants no longer in the store were still billed in the period.
        let gone: u64 = gets
            .iter()
            .filter(|(name, _)| !self.tenants.iter().any(|t| &t.name == *name))
            .map(|(_, n)| n)
            .sum();
        self.total.requests.gets = Some(total + gone);
    }

    /// The start of the period, in ms since the epoch.
    pub fn period_start_ms(&self) -> u64 {
        now_ms().saturating_sub(self.period_days * 24 * 3600 * 1000)
    }
}

/// The accounting period: the last 30 days, as a month is billed.
pub const PERIOD_DAYS: u64 = 30;

/// Splits `len` bytes over `n` owners in whole bytes: the first `len % n` get one more.
fn apportion(len: u64, n: u64, index: u64) -> u64 {
    len / n + u64::from(index < len % n)
}

impl PageStore {
    /// Accounts every checkpoint in the store to its tenant.
    pub async fn accounting(&self) -> Result<Accounting> {
        self.refresh_catalog().await?;
        let since = now_ms().saturating_sub(PERIOD_DAYS * 24 * 3600 * 1000);
        let mut tenants: BTreeMap<String, TenantUsage> = BTreeMap::new();
        // page -> the tenants (indexes into `names`) that reference it, sorted, distinct.
        let mut owners: HashMap<PageId, Vec<u32>> = HashMap::new();
        // pack -> (created_ms, tenant) of the earliest manifest that lists it.
        let mut pack_first: HashMap<PackId, (u64, String)> = HashMap::new();
        let mut names: Vec<String> = Vec::new();
        let mut total = TotalUsage::default();

        let manifests = self.cold().list("manifests/").await?;
        for obj in &manifests {
            let Some(checkpoint) = CheckpointRef::from_object_key(&obj.key) else {
                continue;
            };
            let manifest = self.manifest(&checkpoint).await?;
            let index = match names.iter().position(|n| *n == checkpoint.tenant) {
                Some(i) => i as u32,
                None => {
                    names.push(checkpoint.tenant.clone());
                    (names.len() - 1) as u32
                }
            };
            let t = tenants
                .entry(checkpoint.tenant.clone())
                .or_insert_with(|| TenantUsage {
                    name: checkpoint.tenant.clone(),
                    ..TenantUsage::default()
                });
            t.checkpoints += 1;
            t.manifest_bytes += obj.size;
            if let Some(l) = &manifest.locality {
                t.locality_bytes += l.bytes;
                if manifest.created_ms >= since {
                    t.requests.puts += 1;
                }
            }
            if manifest.created_ms >= since {
                t.requests.puts += 1;
            }
            for pack in &manifest.packs {
                let candidate = (manifest.created_ms, checkpoint.tenant.clone());
                pack_first
                    .entry(*pack)
                    .and_modify(|first| {
                        if candidate < *first {
                            *first = candidate.clone();
                        }
                    })
                    .or_insert(candidate);
            }
            for f in &manifest.files {
                let FileContent::Paged(pages) = &f.content else {
                    continue;
                };
                t.logical_bytes += f.size;
                for id in pages {
                    t.pages_total += 1;
                    if id.is_zero() {
                        t.pages_zero += 1;
                        continue;
                    }
                    let o = owners.entry(*id).or_default();
                    if let Err(at) = o.binary_search(&index) {
                        o.insert(at, index);
                    }
                }
            }
        }
        for (created, tenant) in pack_first.values() {
            if *created >= since {
                if let Some(t) = tenants.get_mut(tenant) {
                    t.requests.puts += 1;
                }
            }
        }

        for (id, o) in &owners {
            let Some(loc) = self.catalog().locate(id) else {
                continue; // missing pages are `verify`'s business, not the bill's
            };
            let len = loc.stored_bytes();
            total.page_bytes += len;
            let n = o.len() as u64;
            if n == 1 {
                total.unique_bytes += len;
            } else {
                total.shared_bytes += len;
            }
            for (i, owner) in o.iter().enumerate() {
                let Some(t) = tenants.get_mut(&names[*owner as usize]) else {
                    continue;
                };
                t.pages_distinct += 1;
                if n == 1 {
                    t.pages_unique += 1;
                    t.unique_bytes += len;
                } else {
                    t.shared_bytes += apportion(len, n, i as u64);
                    t.shared_full_bytes += len;
                }
            }
        }

        // The local tier's pages and their cached sizes, when this process can read it.
        let mut local_pages: Option<HashMap<PageId, u64>> = None;
        if let Some(local) = self.local() {
            let mut map = HashMap::new();
            local.for_each(&mut |id, _codec, data| {
                map.insert(id, data.len() as u64);
            })?;
            for t in tenants.values_mut() {
                t.local_bytes = Some(0);
            }
            for (id, o) in &owners {
                let Some(len) = map.get(id) else { continue };
                let n = o.len() as u64;
                for (i, owner) in o.iter().enumerate() {
                    if let Some(t) = tenants.get_mut(&names[*owner as usize]) {
                        *t.local_bytes.get_or_insert(0) += apportion(*len, n, i as u64);
                    }
                }
            }
            local_pages = Some(map);
        }

        let mut cold_objects = 0;
        let mut pack_bytes = 0;
        for obj in self.cold().list("").await? {
            cold_objects += 1;
            total.stored_bytes += obj.size;
            if obj.key.starts_with("packs/") {
                pack_bytes += obj.size;
            }
        }
        for t in tenants.values_mut() {
            t.stored_bytes = t.unique_bytes + t.shared_bytes + t.manifest_bytes + t.locality_bytes;
            total.logical_bytes += t.logical_bytes;
            total.manifest_bytes += t.manifest_bytes;
            total.locality_bytes += t.locality_bytes;
            total.checkpoints += t.checkpoints;
            total.requests.puts += t.requests.puts;
        }
        total.tenants = tenants.len() as u64;
        total.overhead_bytes = pack_bytes.saturating_sub(total.page_bytes);
        let mut tiers = vec![TierUsage {
            tier: "cold".into(),
            kind: self.cold().describe(),
            objects: cold_objects,
            bytes: total.stored_bytes,
        }];
        if let (Some(map), Some(local)) = (local_pages, self.local()) {
            tiers.push(TierUsage {
                tier: "local".into(),
                kind: local.engine().to_string(),
                objects: map.len() as u64,
                bytes: map.values().sum(),
            });
        }
        Ok(Accounting {
            tenants: tenants.into_values().collect(),
            total,
            tiers,
            period_days: PERIOD_DAYS,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apportioned_shares_add_up_to_the_page() {
        for len in [0u64, 1, 7, 100, 4096, 4097] {
            for n in 1..7 {
                let sum: u64 = (0..n).map(|i| apportion(len, n, i)).sum();
                assert_eq!(sum, len, "len {len} n {n}");
            }
        }
    }

    #[test]
    fn monthly_cost_at_default_prices() {
        let p = Prices::default();
        let c = p.monthly(1 << 30, 2000, Some(10_000));
        assert!((c.storage - 0.023).abs() < 1e-12);
        assert!((c.requests - (0.01 + 0.004)).abs() < 1e-12);
        assert!((c.total - 0.037).abs() < 1e-12);
        assert_eq!(p.monthly(0, 0, None).total, 0.0);
    }
}
