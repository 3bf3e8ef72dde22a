//! Store locks: no gc may delete a page that an ingest in flight is about to reference, in any
//! process on any machine sharing the cold tier; and no gc may hold an ingest up.
//!
//! S3 offers no compare-and-swap here (Garage lacks conditional PUT), so each locker writes its
//! own lock object and then lists the others (write, then list): of two conflicting lockers at
//! least one sees the other. Three kinds:
//! - `ingest` (ingests and derived checkpoints) share with each other and with a gc;
//! - `recompress` shares with ingests and excludes gc (both rewrite packs);
//! - `gc` excludes gc and recompress, and fails at once beside either.
//!
//! A gc does not exclude ingests. It writes the pages it is about to delete (its *doomed* set,
//! `locks/gc-….doomed`, beside its lock) and then lists the ingest locks and waits until each of
//! those is released ([`PageStore::wait_for_ingests`]). An ingest lists the locks after writing its
//! own, so of an ingest and a gc one sees the other: the ingest sees the doomed set and does not
//! dedup against those pages (it stores its own copies), or the gc sees the ingest and waits for
//! it to commit, and then keeps what the manifests committed meanwhile reference ([`crate::gc`]).
//!
//! Locks of older versions carry no `protocol`: an old gc excluded ingests, so an ingest waits for
//! one as before (up to 2 minutes); an old ingest lock may be an old recompression, so a gc fails
//! beside one. A lock whose process is gone or that is older than [`STALE_AFTER`] is ignored and
//! removed by the next gc, so a crash (kill -9) never wedges the store. "Gone" on the same host: no
//! process with its pid, or one that started at another time or in another boot (a busy host
//! reuses pids, and a lock judged by its pid alone would block gc, or make an ingest wait and
//! fail, for up to an hour).
//!
//! Lock objects say their format (`"format": 1`, [`crate::format`]); a lock of a newer format is
//! taken as held, by another host under the oldest protocol, until it is too old.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::page::{PageId, PageSet};
use crate::store::PageStore;

/// A lock not released within this long is presumed abandoned.
pub const STALE_AFTER: Duration = Duration::from_secs(3600);
/// How long an ingest waits for a gc of an older version, or a recompression for a gc, before
/// giving up.
const INGEST_WAIT: Duration = Duration::from_secs(120);
/// The format of lock objects ([`crate::format`]; locks written before it carried none are 1).
const LOCK_FORMAT: u32 = 1;
/// The lock protocol this version speaks: 2, gc beside ingests (absent in older locks: 0).
const PROTOCOL: u32 = 2;
/// How often a gc looks again whether the ingests it waits for are done.
const INGEST_POLL: Duration = Duration::from_millis(500);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockKind {
    /// An ingest or a derived checkpoint: dedups against stored pages, then commits a manifest.
    Ingest,
    /// A recompression beside ingests ([`crate::recompress`]).
    Recompress,
    Gc,
}

impl LockKind {
    fn name(self) -> &'static str {
        match self {
            LockKind::Ingest => "ingest",
            LockKind::Recompress => "recompress",
            LockKind::Gc => "gc",
        }
    }

    /// Whether a lock of `other` held by a process speaking `protocol` keeps this kind out.
    fn blocked_by(self, other: LockKind, protocol: u32) -> bool {
        match (self, other) {
            // An old gc deletes without announcing what.
            (LockKind::Ingest, LockKind::Gc) => protocol < PROTOCOL,
            (LockKind::Ingest, _) => false,
            (LockKind::Recompress, LockKind::Gc) => true,
            (LockKind::Recompress, _) => false,
            (LockKind::Gc, LockKind::Gc | LockKind::Recompress) => true,
            // An old ingest lock may be an old recompression.
            (LockKind::Gc, LockKind::Ingest) => protocol < PROTOCOL,
        }
    }

    /// Whether a lock of `other` can matter to this kind at all (its body is read only then).
    fn may_meet(self, other: LockKind) -> bool {
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
    /// The lock protocol of the locker ([`PROTOCOL`]; 0 in locks of older versions).
    #[serde(default)]
    protocol: u32,
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
            protocol: PROTOCOL,
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

/// A held lock; give it back with [`PageStore::unlock`].
pub struct StoreLock {
    key: String,
    /// For an ingest: the pages running gcs are deleting, which it must not dedup against.
    doomed: Option<Arc<PageSet>>,
}

impl StoreLock {
    /// The pages an ingest under this lock must store again rather than reference: those a
    /// running gc announced it deletes.
    pub(crate) fn doomed(&self) -> Option<Arc<PageSet>> {
        self.doomed.clone()
    }

    /// Where a gc holding this lock announces its doomed pages.
    fn doomed_key(&self) -> String {
        doomed_key_of(&self.key)
    }
}

/// This machine's host name (what locks and the gc record say of their writer).
pub(crate) fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// The kind of a lock object (`None`: not a lock, e.g. a doomed set).
fn kind_of(key: &str) -> Option<LockKind> {
    let name = key.strip_prefix("locks/")?.strip_suffix(".lock")?;
    if name.starts_with("gc-") {
        Some(LockKind::Gc)
    } else if name.starts_with("ingest-") {
        Some(LockKind::Ingest)
    } else if name.starts_with("recompress-") {
        Some(LockKind::Recompress)
    } else {
        None
    }
}

fn doomed_key_of(lock_key: &str) -> String {
    format!("{}.doomed", lock_key.trim_end_matches(".lock"))
}

/// The lock a doomed set belongs to, if `key` is one.
fn lock_of_doomed(key: &str) -> Option<String> {
    let stem = key.strip_prefix("locks/gc-")?.strip_suffix(".doomed")?;
    Some(format!("locks/gc-{stem}.lock"))
}

/// A doomed set's body: the page ids, 32 bytes each, in the metadata objects' checked frame.
fn encode_doomed(pages: &PageSet) -> Vec<u8> {
    let mut body = Vec::with_capacity(pages.len() * 32);
    for p in pages {
        body.extend_from_slice(&p.0);
    }
    crate::meta::encode(&body)
}

fn decode_doomed(key: &str, bytes: &[u8]) -> Result<PageSet> {
    let body = crate::meta::decode(key, bytes)?;
    if body.len() % 32 != 0 {
        return Err(Error::CorruptObject {
            what: "gc's doomed set",
            object: key.to_string(),
            reason: format!("{} bytes, not a multiple of 32", body.len()),
        });
    }
    Ok(body
        .chunks_exact(32)
        .map(|c| {
            let mut id = [0u8; 32];
            id.copy_from_slice(c);
            PageId(id)
        })
        .collect())
}

impl PageStore {
    /// The body of a lock object; `None` when it is gone or unreadable (as good as stale).
    async fn read_lock(&self, key: &str) -> Result<Option<LockBody>> {
        let bytes = match self.cold().get(key).await {
            Ok(b) => b,
            Err(Error::ObjectNotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            return Ok(None);
        };
        if let Err(e) = crate::format::json_format("store lock", key, &value, LOCK_FORMAT) {
            // A newer picocenter's lock: its process cannot be judged here, so it is taken as
            // held by another host under the oldest protocol (it keeps gc and ingests apart)
            // until it is too old to trust.
            let created_ms = value.get("created_ms").and_then(serde_json::Value::as_u64);
            warn!(error = %e, "a lock of a newer format is taken as held");
            return Ok(Some(LockBody {
                host: String::new(),
                pid: 0,
                created_ms: created_ms.unwrap_or(0),
                started: None,
                boot: None,
                protocol: 0,
            }));
        }
        Ok(serde_json::from_value::<LockBody>(value).ok())
    }

    /// Takes a lock of `kind`. An ingest waits (up to 2 minutes) only for a gc of an older
    /// version, and is handed the pages running gcs delete ([`StoreLock`]); a recompression
    /// waits as long for a gc; a gc fails at once beside another gc or a recompression.
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
            let mut stale_gcs = HashSet::new();
            let mut doomed_keys = Vec::new();
            for obj in self.cold().list("locks/").await? {
                if let Some(lock) = lock_of_doomed(&obj.key) {
                    doomed_keys.push((obj.key, lock));
                    continue;
                }
                let Some(other) = kind_of(&obj.key) else {
                    continue;
                };
                if obj.key == key || !kind.may_meet(other) {
                    continue;
                }
                let body = self.read_lock(&obj.key).await?;
                let Some(body) = body.filter(|b| !b.is_stale(now_ms())) else {
                    if other == LockKind::Gc {
                        stale_gcs.insert(obj.key.clone());
                    }
                    if kind == LockKind::Gc {
                        warn!(lock = %obj.key, "removing a stale lock");
                        self.cold().delete(&obj.key).await?;
                    }
                    continue;
                };
                if kind.blocked_by(other, body.protocol) {
                    holder = Some(obj.key);
                    break;
                }
            }
            let Some(holder) = holder else {
                let doomed = match kind {
                    LockKind::Ingest => self.doomed_sets(&doomed_keys, &stale_gcs).await?,
                    _ => None,
                };
                if kind == LockKind::Gc {
                    // A doomed set beside no live gc: a killed gc's.
                    for (doomed, _) in &doomed_keys {
                        self.cold().delete(doomed).await?;
                    }
                }
                debug!(lock = %key, doomed = doomed.as_ref().map_or(0, |d| d.len()), "lock taken");
                return Ok(StoreLock { key, doomed });
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

    /// The union of the doomed sets listed (`(key, its gc's lock)`), but those of gcs found
    /// stale; each read once per process.
    async fn doomed_sets(
        &self,
        listed: &[(String, String)],
        stale_gcs: &HashSet<String>,
    ) -> Result<Option<Arc<PageSet>>> {
        let mut sets = Vec::new();
        for (key, gc) in listed {
            if stale_gcs.contains(gc) {
                continue;
            }
            let cached = self.doomed_cache().get(key).cloned();
            let set = match cached {
                Some(set) => set,
                None => match self.cold().get(key).await {
                    Ok(bytes) => {
                        let set = Arc::new(decode_doomed(key, &bytes)?);
                        self.doomed_cache().insert(key.clone(), set.clone());
                        set
                    }
                    // That gc is done: what it deleted is gone from the listing the ingest
                    // reads its catalog from next.
                    Err(Error::ObjectNotFound(_)) => continue,
                    Err(e) => return Err(e),
                },
            };
            sets.push(set);
        }
        self.doomed_cache()
            .retain(|key, _| listed.iter().any(|(k, _)| k == key));
        Ok(match sets.len() {
            0 => None,
            1 => sets.pop(),
            _ => Some(Arc::new(
                sets.iter().flat_map(|s| s.iter().copied()).collect(),
            )),
        })
    }

    fn doomed_cache(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Arc<PageSet>>> {
        self.doomed_sets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Announces, under a gc's `lock`, the pages that gc is about to delete: every ingest that
    /// takes its lock from now on stores its own copies of them.
    pub(crate) async fn announce_doomed(&self, lock: &StoreLock, pages: &PageSet) -> Result<()> {
        self.cold()
            .put(&lock.doomed_key(), encode_doomed(pages))
            .await
    }

    /// Waits, under a gc's `lock` and after [`Self::announce_doomed`], until every ingest that
    /// holds a lock now has released it (or its process is gone): those may have deduplicated
    /// against a doomed page before it was announced. Ingests that start meanwhile do not wait
    /// for this, nor this for them. Gives up after `limit`.
    pub(crate) async fn wait_for_ingests(
        &self,
        limit: Duration,
        stop: Option<&std::sync::atomic::AtomicBool>,
    ) -> Result<()> {
        let started = std::time::Instant::now();
        let in_flight = |listing: Vec<crate::cold::ObjectMeta>| {
            listing
                .into_iter()
                .filter(|o| kind_of(&o.key) == Some(LockKind::Ingest))
                .map(|o| o.key)
                .collect::<HashSet<String>>()
        };
        // A lock's body never changes (its key is its own): read once, judged at each poll.
        let mut waiting = HashMap::new();
        for key in in_flight(self.cold().list("locks/").await?) {
            if let Some(body) = self.read_lock(&key).await? {
                waiting.insert(key, body);
            }
        }
        let mut logged = false;
        loop {
            waiting.retain(|_, body| !body.is_stale(now_ms()));
            let Some(holder) = waiting.keys().next() else {
                return Ok(());
            };
            if stop.is_some_and(|s| s.load(std::sync::atomic::Ordering::SeqCst)) {
                return Err(Error::Stopped("gc"));
            }
            if started.elapsed() > limit {
                return Err(Error::Busy {
                    what: "gc",
                    holder: holder.clone(),
                });
            }
            if !logged {
                info!(
                    ingests = waiting.len(),
                    "gc waits for the ingests begun before it announced its doomed pages"
                );
                logged = true;
            }
            tokio::time::sleep(INGEST_POLL).await;
            // Only those listed at first: a later ingest saw the doomed set.
            let listed = in_flight(self.cold().list("locks/").await?);
            waiting.retain(|k, _| listed.contains(k));
        }
    }

    /// Gives a lock back (a gc's doomed set with it).
    pub async fn unlock(&self, lock: StoreLock) -> Result<()> {
        if kind_of(&lock.key) == Some(LockKind::Gc) {
            match self.cold().delete(&lock.doomed_key()).await {
                Ok(()) | Err(Error::ObjectNotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
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
