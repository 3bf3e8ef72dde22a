//! The hub's durable state (its [`HubRecord`]: tenants' placements, workers' addresses) in the
//! cold tier, next to the checkpoints: a hub restarted on any machine that reaches the cold tier
//! loses nothing, and the cold tier's own replication is its durability.
//!
//! Objects are never overwritten (as everything in the cold tier): each save writes
//! `hub/state/<sequence>.meta`, checksummed like the store's metadata objects, and a load takes
//! the highest sequence; only the newest few are kept. One hub writes at a time (a standby takes
//! over only once the active one is stopped: docs/hub.md).

use pagestore::cold::ColdTier;
use serde::{Deserialize, Serialize};

use crate::error::{HubError, Result};
use crate::registry::HubRecord;

const PREFIX: &str = "hub/state/";
/// Versions of the record kept besides the newest (for an operator to look back).
const KEEP: usize = 3;
/// The record's format, written inside it (`pagestore::format`): the version this build writes
/// and the newest it reads. Every record has carried one.
pub const FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Stored {
    format: u32,
    record: HubRecord,
}

/// The first field of a stored record, read before the rest: a newer format is refused as such,
/// never taken for a damaged record of this one.
#[derive(Deserialize)]
struct FormatOnly {
    format: u32,
}

/// The hub's record in one cold tier.
pub struct DurableState {
    cold: ColdTier,
    /// The sequence of the newest object.
    sequence: u64,
}

impl DurableState {
    /// The newest record in `cold` (an empty one if there is none).
    pub async fn load(cold: ColdTier) -> Result<(DurableState, HubRecord)> {
        let newest = cold.list(PREFIX).await?.into_iter().filter_map(|o| {
            let seq = sequence_of(&o.key)?;
            Some((seq, o.key))
        });
        let Some((sequence, key)) = newest.max() else {
            return Ok((DurableState { cold, sequence: 0 }, HubRecord::default()));
        };
        let bytes = cold.get(&key).await?;
        let body = pagestore::meta::decode(&key, &bytes)?;
        let bad = |source| HubError::BadRecord {
            key: key.clone(),
            source,
        };
        let FormatOnly { format } = serde_json::from_slice(&body).map_err(bad)?;
        if !(1..=FORMAT).contains(&format) {
            return Err(HubError::RecordFormat {
                key,
                found: format,
                supported: FORMAT,
            });
        }
        let stored: Stored = serde_json::from_slice(&body).map_err(bad)?;
        Ok((DurableState { cold, sequence }, stored.record))
    }

    /// Writes `record` as the newest version, then drops the oldest beyond [`KEEP`].
    pub async fn save(&mut self, record: &HubRecord) -> Result<()> {
        let stored = Stored {
            format: FORMAT,
            record: record.clone(),
        };
        let body = serde_json::to_vec(&stored).map_err(HubError::RecordUnencodable)?;
        let sequence = self.sequence + 1;
        self.cold
            .put(&key_of(sequence), pagestore::meta::encode(&body))
            .await?;
        self.sequence = sequence;
        let mut old: Vec<(u64, String)> = self
            .cold
            .list(PREFIX)
            .await?
            .into_iter()
            .filter_map(|o| Some((sequence_of(&o.key)?, o.key)))
            .collect();
        old.sort();
        old.reverse();
        for (_, key) in old.into_iter().skip(KEEP + 1) {
            self.cold.delete(&key).await?;
        }
        Ok(())
    }
}

fn key_of(sequence: u64) -> String {
    format!("{PREFIX}{sequence:016}.meta")
}

fn sequence_of(key: &str) -> Option<u64> {
    key.strip_prefix(PREFIX)?
        .strip_suffix(".meta")?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{TenantRecord, WorkerRecord};

    fn cold(dir: &std::path::Path) -> ColdTier {
        ColdTier::open(&pagestore::config::ColdConfig::Dir {
            path: dir.to_path_buf(),
        })
        .unwrap()
    }

    fn record(generation: u64) -> HubRecord {
        let mut r = HubRecord::default();
        r.workers.insert(
            "w1".into(),
            WorkerRecord {
                api: "127.0.0.1:7070".parse().unwrap(),
                public_addr: "127.0.0.1".parse().unwrap(),
                draining: true,
            },
        );
        r.tenants.insert(
            "web".into(),
            TenantRecord {
                worker: "w1".into(),
                port: 8080,
                checkpoint: Some(format!("web-{generation}")),
                generation: Some(generation),
                placed_because: "added on worker w1".into(),
            },
        );
        r
    }

    #[tokio::test]
    async fn the_newest_record_is_loaded_and_a_few_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (mut state, empty) = DurableState::load(cold(dir.path())).await.unwrap();
        assert_eq!(empty, HubRecord::default());
        for generation in 1..=10 {
            state.save(&record(generation)).await.unwrap();
        }
        let (_, loaded) = DurableState::load(cold(dir.path())).await.unwrap();
        assert_eq!(loaded, record(10));
        let kept = cold(dir.path()).list(PREFIX).await.unwrap();
        assert_eq!(kept.len(), KEEP + 1);
    }

    #[tokio::test]
    async fn a_corrupt_record_is_an_error_not_an_empty_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let (mut state, _) = DurableState::load(cold(dir.path())).await.unwrap();
        state.save(&record(1)).await.unwrap();
        let key = key_of(1);
        let path = dir.path().join(&key);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 40;
        bytes[last] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        assert!(DurableState::load(cold(dir.path())).await.is_err());
    }

    /// A record of a newer format (whatever its fields) is refused by key and versions.
    #[tokio::test]
    async fn a_record_of_a_newer_format_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let body = br#"{"format":2,"placements":[]}"#;
        cold(dir.path())
            .put(&key_of(1), pagestore::meta::encode(body))
            .await
            .unwrap();
        let err = DurableState::load(cold(dir.path())).await.err().unwrap();
        assert!(
            matches!(&err, HubError::RecordFormat { key, found: 2, supported: 1 } if *key == key_of(1)),
            "{err}"
        );
    }
}
