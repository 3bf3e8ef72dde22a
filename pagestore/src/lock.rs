//! Store locks: `gc` must never run while an ingest is between deduplicating against existing
//! packs and committing its manifest, in any process on any machine sharing the cold tier.
//!
//! S3 offers no compare-and-swap here (Garage lacks conditional PUT), so each locker writes its
//! own lock object and then lists the others (write, then list): of two conflicting lockers at
//! least one sees the other and backs off. Ingests share; gc is exclusive. A lock whose process
//! is gone (same host, no such pid) or that is older than [`STALE_AFTER`] is ignored and removed
//! by the next gc, so a crash (kill -9) never wedges the store.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::error::{Error, Result};
use crate::store::PageStore;

/// A lock not released within this long is presumed abandoned.
pub const STALE_AFTER: Duration = Duration::from_secs(3600);
/// How long an ingest waits for a running gc before giving up.
const INGEST_WAIT: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockKind {
    Ingest,
    Gc,
}

impl LockKind {
    fn name(self) -> &'static str {
        match self {
            LockKind::Ingest => "ingest",
            LockKind::Gc => "gc",
        }
    }
    fn conflicts_with(self, other: LockKind) -> bool {
        self == LockKind::Gc || other == LockKind::Gc
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct LockBody {
    host: String,
    pid: u32,
    created_ms: u64,
}

/// A held lock; give it back with [`StoreLock::release`].
pub struct StoreLock {
    key: String,
}

use crate::clock::now_ms;

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

fn kind_of(key: &str) -> Option<LockKind> {
    let name = key.strip_prefix("locks/")?;
    if name.starts_with("gc-") {
        Some(LockKind::Gc)
    } else if name.starts_with("ingest-") {
        Some(LockKind::Ingest)
    } else {
        None
    }
}

impl PageStore {
    /// Whether a lock object belongs to a process that is gone.
    async fn lock_is_stale(&self, key: &str) -> bool {
        let body = match self.cold.get(key).await {
            Ok(b) => b,
            Err(Error::ObjectNotFound(_)) => return true,
            Err(_) => return false,
        };
        let Ok(lock) = serde_json::from_slice::<LockBody>(&body) else {
            return true;
        };
        if now_ms().saturating_sub(lock.created_ms) > STALE_AFTER.as_millis() as u64 {
            return true;
        }
        lock.host == host() && !std::path::Path::new(&format!("/proc/{}", lock.pid)).exists()
    }

    /// Takes a lock of `kind`. An ingest waits (up to 2 minutes) for a running gc; a gc fails at
    /// once if anything else holds a lock.
    pub async fn lock(&self, kind: LockKind) -> Result<StoreLock> {
        let started = std::time::Instant::now();
        let mut wait = Duration::from_millis(100);
        loop {
            let key = format!(
                "locks/{}-{}-{}-{}.lock",
                kind.name(),
                host(),
                std::process::id(),
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0)
            );
            let body = LockBody {
                host: host(),
                pid: std::process::id(),
                created_ms: now_ms(),
            };
            let bytes = serde_json::to_vec(&body)
                .map_err(|e| Error::Config(format!("cannot encode lock: {e}")))?;
            self.cold.put(&key, bytes).await?;
            let mut holder = None;
            for obj in self.cold.list("locks/").await? {
                let Some(other) = kind_of(&obj.key) else {
                    continue;
                };
                if obj.key == key || !kind.conflicts_with(other) {
                    continue;
                }
                if self.lock_is_stale(&obj.key).await {
                    if kind == LockKind::Gc {
                        warn!(lock = %obj.key, "removing a stale lock");
                        self.cold.delete(&obj.key).await?;
                    }
                    continue;
                }
                holder = Some(obj.key);
                break;
            }
            let Some(holder) = holder else {
                debug!(lock = %key, "lock taken");
                return Ok(StoreLock { key });
            };
            self.cold.delete(&key).await?;
            if kind == LockKind::Gc || started.elapsed() > INGEST_WAIT {
                return Err(Error::Busy {
                    what: kind.name(),
                    holder,
                });
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(2));
        }
    }

    /// Gives a lock back.
    pub async fn unlock(&self, lock: StoreLock) -> Result<()> {
        self.cold.delete(&lock.key).await
    }
}
