//! The cold tier: durable object storage for packs and manifests.
//!
//! Like neon's `remote_storage`, one interface ([`ColdStorage`]) with one implementation per kind of
//! store, and an enum ([`ColdTier`]) that the rest of the crate uses, so every test can run against
//! a local directory and the real object store alike. Objects are immutable and named by content
//! (packs) or by a unique key (manifests); nothing is overwritten in place.

mod dir;
mod direct_write;
mod s3;
mod waits;
mod waves;

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

pub use dir::DirStorage;
pub use s3::S3Storage;
pub use waits::{ColdWaits, Waiting};
pub use waves::{ReadInFlight, ReadWaves};

use crate::config::ColdConfig;
use crate::error::Result;

/// One object in a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
}

/// What every cold-tier backend offers. Keys are `/`-separated relative names.
#[allow(async_fn_in_trait)]
pub trait ColdStorage {
    /// Stores `data` under `key`, durably, all or nothing.
    async fn put(&self, key: &str, data: Bytes) -> Result<()>;
    /// The whole object.
    async fn get(&self, key: &str) -> Result<Vec<u8>>;
    /// `len` bytes from `offset`; fewer only if the object ends first.
    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>>;
    /// Every object whose key starts with `prefix`, in key order.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>>;
    async fn delete(&self, key: &str) -> Result<()>;
}

/// Request and byte counters, for `pico store stats` and the benchmarks.
#[derive(Debug, Default)]
pub struct ColdCounters {
    pub gets: AtomicU64,
    pub get_bytes: AtomicU64,
    pub puts: AtomicU64,
    pub put_bytes: AtomicU64,
    pub lists: AtomicU64,
    /// Reads (GET, ranged GET, LIST) in flight and their waves: sequential round trips.
    pub read_waves: ReadWaves,
    /// Waves of readers' waits on those reads (a restore's and its tenant's faults, counted by
    /// the reader): round trips waited for one after another.
    pub read_waits: ColdWaits,
}

/// The configured cold tier.
pub struct ColdTier {
    backend: Backend,
    pub counters: ColdCounters,
}

enum Backend {
    Dir(DirStorage),
    S3(S3Storage),
}

/// Calls the same method on whichever backend is configured.
macro_rules! dispatch {
    ($self:expr, $s:ident => $call:expr) => {
        match &$self.backend {
            Backend::Dir($s) => $call,
            Backend::S3($s) => $call,
        }
    };
}

impl ColdTier {
    /// Opens the cold tier a configuration describes.
    pub fn open(config: &ColdConfig) -> Result<Self> {
        let backend = match config {
            ColdConfig::Dir { path } => Backend::Dir(DirStorage::open(path)?),
            ColdConfig::S3(s3) => Backend::S3(S3Storage::new(s3)?),
        };
        Ok(ColdTier {
            backend,
            counters: ColdCounters::default(),
        })
    }

    pub fn dir(storage: DirStorage) -> Self {
        ColdTier {
            backend: Backend::Dir(storage),
            counters: ColdCounters::default(),
        }
    }

    /// A short description for logs and errors.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Dir(d) => format!("dir:{}", d.root().display()),
            Backend::S3(s) => format!("s3:{}", s.describe()),
        }
    }

    /// The kind of backend: `dir` or `s3`.
    pub fn kind(&self) -> &'static str {
        match &self.backend {
            Backend::Dir(_) => "dir",
            Backend::S3(_) => "s3",
        }
    }

    /// Requests retried after a transient failure (S3 only).
    pub fn retries(&self) -> u64 {
        match &self.backend {
            Backend::Dir(_) => 0,
            Backend::S3(s) => s.retries.load(Ordering::Relaxed),
        }
    }

    /// Stores `data` (a `Vec<u8>`, or [`Bytes`] shared with other users without a copy).
    pub async fn put(&self, key: &str, data: impl Into<Bytes>) -> Result<()> {
        let data = data.into();
        let n = data.len() as u64;
        dispatch!(self, b => b.put(key, data).await)?;
        self.counters.puts.fetch_add(1, Ordering::Relaxed);
        self.counters.put_bytes.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }

    pub async fn get(&self, key: &str) -> Result<Vec<u8>> {
        let _read = self.counters.read_waves.start();
        let data = dispatch!(self, b => b.get(key).await)?;
        self.count_get(data.len());
        Ok(data)
    }

    pub async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let _read = self.counters.read_waves.start();
        let data = dispatch!(self, b => b.get_range(key, offset, len).await)?;
        self.count_get(data.len());
        Ok(data)
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.counters.lists.fetch_add(1, Ordering::Relaxed);
        let _read = self.counters.read_waves.start();
        dispatch!(self, b => b.list(prefix).await)
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        dispatch!(self, b => b.delete(key).await)
    }

    fn count_get(&self, n: usize) {
        self.counters.gets.fetch_add(1, Ordering::Relaxed);
        self.counters
            .get_bytes
            .fetch_add(n as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tier() -> (tempfile::TempDir, ColdTier) {
        let dir = tempfile::tempdir().unwrap();
        let tier = ColdTier::dir(DirStorage::open(dir.path()).unwrap());
        (dir, tier)
    }

    #[tokio::test]
    async fn each_read_is_a_wave_unless_another_is_in_flight() {
        let (_dir, tier) = tier();
        tier.put("packs/a", b"aaaa".to_vec()).await.unwrap();
        tier.put("packs/b", b"bbbb".to_vec()).await.unwrap();
        assert_eq!(tier.counters.read_waves.waves(), 0, "PUTs are no read");

        // One after the other, every kind of read: a round trip each.
        tier.get("packs/a").await.unwrap();
        assert_eq!(
            tier.get_range("packs/b", 1, 2).await.unwrap(),
            b"bb".to_vec()
        );
        tier.list("packs/").await.unwrap();
        assert_eq!(tier.counters.read_waves.waves(), 3);

        // A failed read was a round trip too, and is no longer in flight.
        assert!(tier.get("packs/missing").await.is_err());
        assert_eq!(tier.counters.read_waves.waves(), 4);
        assert_eq!(tier.counters.read_waves.in_flight(), 0);

        // Reads made while another is in flight join its wave. (Held by hand: two real reads
        // on a directory may each finish before the other starts, however they are awaited.)
        let other = tier.counters.read_waves.start();
        assert_eq!(tier.counters.read_waves.waves(), 5);
        tier.get("packs/a").await.unwrap();
        tier.get_range("packs/b", 0, 4).await.unwrap();
        assert_eq!(tier.counters.read_waves.waves(), 5);
        assert_eq!(tier.counters.read_waves.in_flight(), 1);
        drop(other);
        assert_eq!(tier.counters.read_waves.in_flight(), 0);
    }
}
