//! Cold-tier reads made on a tenant's behalf, recorded durably: one JSON line per restore.
//!
//! A process's request counters die with it, yet the storage bill charges every GET of the
//! period. The worker appends what each swap-in read from the cold tier (the restore-set prefetch
//! and the background fill, the reads it can attribute to one tenant), and `pico report cost`
//! sums the lines of the period.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UsageRecord {
    pub at_ms: u64,
    pub tenant: String,
    pub cold_gets: u64,
    pub cold_bytes: u64,
}

/// Appends one record (one line, one write, so concurrent appenders do not interleave).
pub fn append(path: &Path, record: &UsageRecord) -> Result<()> {
    let mut line = serde_json::to_vec(record).map_err(|source| Error::Encode {
        what: "a usage record",
        source,
    })?;
    line.push(b'\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    f.write_all(&line).map_err(|e| Error::io(path, e))
}

/// Cold GETs per tenant recorded at or after `since_ms`. No log yet means none; a damaged line
/// (a crash mid-append) is skipped.
pub fn gets_since(path: &Path, since_ms: u64) -> Result<HashMap<String, u64>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut gets = HashMap::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line.map_err(|e| Error::io(path, e))?;
        if let Ok(r) = serde_json::from_str::<UsageRecord>(&line) {
            if r.at_ms >= since_ms {
                *gets.entry(r.tenant).or_insert(0) += r.cold_gets;
            }
        }
    }
    Ok(gets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_the_period_per_tenant_and_skips_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.jsonl");
        assert!(gets_since(&path, 0).unwrap().is_empty());
        for (at_ms, tenant, cold_gets) in [(10, "a", 3), (20, "a", 4), (30, "b", 5), (5, "b", 100)]
        {
            append(
                &path,
                &UsageRecord {
                    at_ms,
                    tenant: tenant.into(),
                    cold_gets,
                    cold_bytes: 1,
                },
            )
            .unwrap();
        }
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"at_ms\":")
            .unwrap();
        let gets = gets_since(&path, 10).unwrap();
        assert_eq!(gets.get("a"), Some(&7));
        assert_eq!(gets.get("b"), Some(&5));
    }
}
