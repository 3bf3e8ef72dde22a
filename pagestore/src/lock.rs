//! Store locks: `gc` must never run while an ingest is between deduplicating against existing
//! packs and committing its manifest, in any process on any machine sharing the cold tier.
//!
//! S3 offers no compare-and-swap here (Garage lacks conditional PUT), so each locker writes its
//! own lock object and then lists the others (write, then list): of two conflicting lockers at
//! least one sees the other and backs off. Ingests share; gc is exclusive. A lock whose process
//! is gone or that is older than [`STALE_AFTER`] is ignored and removed by the next gc, so a
//! crash (kill -9) never wedges the store. "Gone" on the same host: no process with its pid, or
//! one that started at another time or in another boot (a busy host reuses pids, and a lock
//! judged by its pid alone would block gc, or make an ingest wait and fail, for up to an hour).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::error::{Error, Result};
use crate::store::PageStore;

/// A lock not released within this long is presumed abandoned.
pub const STALE_AFTER: Duration = Duration::from_secs(3600);
/// The format of lock objects ([`crate::format`]; locks written before it carried none are 1).
const LOCK_FORMAT: u32 = 1;
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
    /// The locker's start time (clock ticks after boot, `/proc/PID/stat`), absent in locks of
    /// older versions.
    #[serde(default)]
    started: Option<u64>,
    /// The boot it was taken in (`/proc/sys/kernel/random/boot_id`).
    #[serde(default)]
    boot: Option<String>,
}

impl LockBody {
    /// This process's lock.
    fn mine() -> LockBody {
        let pid = std::process::id();
        LockBody {
            host: host(),
            pid,
            created_ms: now_ms(),
            started: process_started(pid),
            boot: boot_id(),
        }
    }

    /// Whether the process that took it is gone (or it is too old to trust), judged at `now_ms`
    /// on this host.
    fn is_stale(&self, now_ms: u64) -> bool {
        if now_ms.saturating_sub(self.created_ms) > STALE_AFTER.as_millis() as u64 {
            return true;
        }
        if self.host != host() {
            return false;
        }
        if self.boot.is_some() && self.boot != boot_id() {
            return true;
        }
        match (process_started(self.pid), self.started) {
            (None, _) => true,
            (Some(now), Some(then)) => now != then,
            (Some(_), None) => false,
        }
    }
}

/// When process `pid` started (clock ticks after boot), if it exists.
fn process_started(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22; the 20th after the parenthesised command name (which may hold spaces).
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|b| b.trim().to_string())
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
        let body = match self.cold().get(key).await {
            Ok(b) => b,
            Err(Error::ObjectNotFound(_)) => return true,
            Err(_) => return false,
        };
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body) else {
            return true;
        };
        if let Err(e) = crate::format::json_format("store lock", key, &value, LOCK_FORMAT) {
            // A newer picocenter's lock: its process cannot be judged here, so it holds until
            // it is too old to trust (gc must never run beside an ingest).
            let created = value.get("created_ms").and_then(serde_json::Value::as_u64);
            let too_old = created
                .is_some_and(|c| now_ms().saturating_sub(c) > STALE_AFTER.as_millis() as u64);
            if !too_old {
                warn!(error = %e, "a lock of a newer format is taken as held");
            }
            return too_old;
        }
        let Ok(lock) = serde_json::from_value::<LockBody>(value) else {
            return true;
        };
        lock.is_stale(now_ms())
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
            let body = LockBody::mine();
            let versioned = crate::format::Versioned {
                format: LOCK_FORMAT,
                record: &body,
            };
            let bytes = serde_json::to_vec(&versioned).map_err(|source| Error::Encode {
                what: "a store lock",
                source,
            })?;
            self.cold().put(&key, bytes).await?;
            let mut holder = None;
            for obj in self.cold().list("locks/").await? {
                let Some(other) = kind_of(&obj.key) else {
                    continue;
                };
                if obj.key == key || !kind.conflicts_with(other) {
                    continue;
                }
                if self.lock_is_stale(&obj.key).await {
                    if kind == LockKind::Gc {
                        warn!(lock = %obj.key, "removing a stale lock");
                        self.cold().delete(&obj.key).await?;
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
            self.cold().delete(&key).await?;
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
        self.cold().delete(&lock.key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_is_alive_only_while_the_very_process_that_took_it_runs() {
        let now = now_ms();
        let mine = LockBody::mine();
        assert!(mine.started.is_some() && mine.boot.is_some());
        assert!(!mine.is_stale(now), "this process holds it");

        // The same pid, now another process (started at another time): the holder is gone.
        let reused = LockBody {
            started: mine.started.map(|s| s + 1),
            ..LockBody::mine()
        };
        assert!(reused.is_stale(now));
        let other_boot = LockBody {
            boot: Some("another-boot".into()),
            ..LockBody::mine()
        };
        assert!(other_boot.is_stale(now));
        // pid_max is at most 4194304: no such process.
        let dead = LockBody {
            pid: 4_194_305,
            ..LockBody::mine()
        };
        assert!(dead.is_stale(now));
        // A lock of an older version (no start time) goes by its pid alone.
        let old: LockBody = serde_json::from_str(&format!(
            r#"{{"host":"{}","pid":{},"created_ms":{now}}}"#,
            host(),
            std::process::id()
        ))
        .unwrap();
        assert!(!old.is_stale(now));
        // Another host's lock is trusted until it is too old.
        let remote = LockBody {
            host: "elsewhere".into(),
            pid: 4_194_305,
            created_ms: now,
            ..LockBody::mine()
        };
        assert!(!remote.is_stale(now));
        assert!(remote.is_stale(now + STALE_AFTER.as_millis() as u64 + 1));
    }

    /// A newer picocenter's lock cannot be judged by its process: it holds until it is too old.
    #[tokio::test]
    async fn a_lock_of_a_newer_format_holds_until_it_is_too_old() {
        let home = tempfile::tempdir().unwrap();
        let store = PageStore::open(&crate::StoreConfig::embedded(home.path()))
            .await
            .unwrap();
        let key = "locks/ingest-elsewhere-1-1.lock";
        let newer = |created_ms: u64| format!(r#"{{"format":2,"created_ms":{created_ms}}}"#);
        store
            .cold()
            .put(key, newer(now_ms()).into_bytes())
            .await
            .unwrap();
        assert!(matches!(
            store.lock(LockKind::Gc).await,
            Err(Error::Busy { holder, .. }) if holder == key
        ));
        let old = now_ms() - STALE_AFTER.as_millis() as u64 - 1000;
        store
            .cold()
            .put(key, newer(old).into_bytes())
            .await
            .unwrap();
        let lock = store.lock(LockKind::Gc).await.unwrap();
        store.unlock(lock).await.unwrap();
        // What this build writes says its format.
        let lock = store.lock(LockKind::Ingest).await.unwrap();
        let written = store.cold().list("locks/").await.unwrap();
        let body = store.cold().get(&written[0].key).await.unwrap();
        assert!(body.starts_with(br#"{"format":1,"host":"#), "{body:?}");
        store.unlock(lock).await.unwrap();
    }
}
