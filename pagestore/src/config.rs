//! Typed configuration of the page store (the `[cold]`, `[local]` and `[hot]` sections of
//! `pico.toml`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    pub cold: ColdConfig,
    pub local: LocalConfig,
    #[serde(default)]
    pub hot: HotConfig,
    #[serde(default)]
    pub retention: RetentionConfig,
    #[serde(default)]
    pub gc: GcConfig,
}

/// How many checkpoints of each tenant are kept.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// After each ingest, the newest `keep_last` checkpoints of the tenant are kept (default 3:
    /// the one a restore reads and two to roll back to); 0 keeps every checkpoint.
    #[serde(default = "default_keep_last")]
    pub keep_last: u64,
    /// ... and the newest checkpoint of each of the last `keep_daily` days (UTC; default 7: one
    /// a day for a week). Every other checkpoint is deleted, except the full manifest a kept one
    /// is written against; their pages go at the next `pico store gc`.
    #[serde(default = "default_keep_daily")]
    pub keep_daily: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            keep_last: default_keep_last(),
            keep_daily: default_keep_daily(),
        }
    }
}

fn default_keep_last() -> u64 {
    3
}

fn default_keep_daily() -> u64 {
    7
}

/// Garbage collection.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GcConfig {
    /// A pack whose live page bytes fall under this fraction is rewritten (default 0.5): low
    /// enough that a gc does not copy most of the store, high enough that dead pages do not
    /// keep costing half the storage.
    #[serde(default = "default_repack_below")]
    pub repack_below: f64,
    /// A worker runs gc itself once this long after the store's last gc, by any process
    /// (default a day; 0: never, leave it to `pico store gc`). It runs beside ingests, its CPU
    /// work at nice 19, pausing while a swap runs.
    #[serde(default = "default_gc_every_ms")]
    pub every_ms: u64,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            repack_below: default_repack_below(),
            every_ms: default_gc_every_ms(),
        }
    }
}

fn default_gc_every_ms() -> u64 {
    24 * 3600 * 1000
}

fn default_repack_below() -> f64 {
    0.5
}

/// The memory tier of decoded pages.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HotConfig {
    /// Bound in bytes (0 disables the tier). Default 256 MiB.
    #[serde(default = "default_hot_bytes")]
    pub max_bytes: u64,
    /// A page nobody read for this long is dropped, to the second (0: kept until evicted).
    /// Default 30 s. The worker applies it; a tier nobody ages keeps its pages.
    #[serde(default = "default_hot_ttl_ms")]
    pub ttl_ms: u64,
}

impl Default for HotConfig {
    fn default() -> Self {
        HotConfig {
            max_bytes: default_hot_bytes(),
            ttl_ms: default_hot_ttl_ms(),
        }
    }
}

fn default_hot_ttl_ms() -> u64 {
    30_000
}

fn default_hot_bytes() -> u64 {
    256 << 20
}

fn default_local_bytes() -> u64 {
    8 << 30
}

fn default_whole_images_bytes() -> u64 {
    16 << 30
}

/// Where packs and manifests are kept durably.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ColdConfig {
    /// A local directory (the embedded default).
    Dir { path: PathBuf },
    /// An S3-compatible object store (AWS S3, Garage, MinIO).
    S3(S3Config),
}

/// `[cold] kind = "s3"`: where the bucket is and how to sign requests to it.
#[derive(Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Base URL, e.g. `http://127.0.0.1:3900`. Requests use path-style addressing.
    pub endpoint: String,
    /// Signing region (Garage's default is `garage`).
    #[serde(default = "default_region")]
    pub region: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Prepended to every object key (`PREFIX/packs/...`), so several stores can share a bucket.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Attempts per request before a transient failure is reported (default 5).
    #[serde(default)]
    pub max_attempts: Option<u32>,
}

fn default_region() -> String {
    "garage".into()
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("prefix", &self.prefix)
            .field("max_attempts", &self.max_attempts)
            .finish()
    }
}

/// The local page cache on this machine's disk.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    /// Directory of the embedded KV store.
    pub path: PathBuf,
    /// Whether to use a local tier at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Bound on the bytes of cached pages; the oldest are evicted beyond it. Default 8 GiB.
    #[serde(default = "default_local_bytes")]
    pub max_bytes: u64,
    /// The embedded KV engine: `sled` or `fjall`.
    #[serde(default)]
    pub engine: LocalEngine,
    /// Directory of the pack index cache (see [`crate::index_cache`]); none: every open reads
    /// every pack's index from the cold tier.
    #[serde(default)]
    pub index_cache: Option<PathBuf>,
    /// Bound on the bytes on disk of the kept dumps beside the tier ([`crate::whole_image`]);
    /// the least recently kept are deleted beyond it. Default 16 GiB (uncompressed images: an
    /// 11 MiB Python tenant's, 1500 of them).
    #[serde(default = "default_whole_images_bytes")]
    pub whole_images_max_bytes: u64,
}

/// The embedded KV engine of the local tier (compared in docs/ARCHITECTURE.md).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LocalEngine {
    Sled,
    #[default]
    Fjall,
}

impl std::fmt::Display for LocalEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LocalEngine::Sled => "sled",
            LocalEngine::Fjall => "fjall",
        })
    }
}

fn yes() -> bool {
    true
}

impl StoreConfig {
    /// The embedded defaults under a `pico` home directory.
    pub fn embedded(home: &Path) -> StoreConfig {
        StoreConfig {
            cold: ColdConfig::Dir {
                path: home.join("cold"),
            },
            local: LocalConfig {
                path: home.join("local"),
                enabled: true,
                max_bytes: default_local_bytes(),
                engine: LocalEngine::default(),
                index_cache: Some(home.join("pack-index")),
                whole_images_max_bytes: default_whole_images_bytes(),
            },
            hot: HotConfig::default(),
            retention: RetentionConfig::default(),
            gc: GcConfig::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        cold: ColdConfig,
        local: Option<LocalConfig>,
        hot: Option<HotConfig>,
    }

    #[test]
    fn s3_section_parses_and_rejects_unknown_keys() {
        let text = r#"
[cold]
kind = "s3"
endpoint = "http://127.0.0.1:3900"
bucket = "pico"
access_key_id = "GK1"
secret_access_key = "s3cr3t"
prefix = "site-a"

[local]
path = "/var/lib/pico/local"
max_bytes = 1048576

[hot]
max_bytes = 0
"#;
        let doc: Doc = toml::from_str(text).unwrap();
        let ColdConfig::S3(s3) = doc.cold else {
            panic!("not s3")
        };
        assert_eq!(s3.region, "garage");
        assert_eq!(s3.prefix.as_deref(), Some("site-a"));
        assert!(!format!("{s3:?}").contains("s3cr3t"));
        let local = doc.local.unwrap();
        assert_eq!(local.max_bytes, 1 << 20);
        assert_eq!(local.engine, LocalEngine::default());
        assert_eq!(doc.hot.unwrap().max_bytes, 0);
        let bad = text.replace("prefix", "prefx");
        assert!(toml::from_str::<Doc>(&bad).is_err());
        let dir: Doc = toml::from_str("[cold]\nkind = \"dir\"\npath = \"/x\"\n").unwrap();
        assert_eq!(dir.cold, ColdConfig::Dir { path: "/x".into() });
    }

    #[test]
    fn local_engine_is_sled_or_fjall_and_nothing_else() {
        let parse = |engine: &str| {
            toml::from_str::<LocalConfig>(&format!("path = \"/l\"\nengine = \"{engine}\"\n"))
        };
        assert_eq!(parse("sled").unwrap().engine, LocalEngine::Sled);
        assert_eq!(parse("fjall").unwrap().engine, LocalEngine::Fjall);
        let err = parse("rocksdb").unwrap_err().to_string();
        assert!(
            err.contains("unknown variant `rocksdb`, expected `sled` or `fjall`"),
            "{err}"
        );
    }
}
