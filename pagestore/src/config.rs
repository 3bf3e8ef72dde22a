//! Typed configuration of the page store (the `[cold]` and `[local]` sections of `pico.toml`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    pub cold: ColdConfig,
    pub local: LocalConfig,
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
            },
        }
    }
}
