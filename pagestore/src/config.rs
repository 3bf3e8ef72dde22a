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
