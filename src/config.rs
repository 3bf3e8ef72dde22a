//! `pico.toml`: one typed section per part, unknown keys rejected, embedded defaults for all.
//! Every field is documented in docs/configuration.md.

use std::path::{Path, PathBuf};

use anyhow::Context;
use pagestore::config::{
    ColdConfig, GcConfig, HotConfig, LocalConfig, RetentionConfig, StoreConfig,
};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PicoConfig {
    pub cold: Option<ColdConfig>,
    pub local: Option<LocalConfig>,
    pub hot: Option<HotConfig>,
    pub retention: Option<RetentionConfig>,
    pub gc: Option<GcConfig>,
    pub worker: Option<worker::WorkerConfig>,
}

impl PicoConfig {
    /// Loads `HOME/pico.toml` if present; every missing section takes its embedded default.
    pub fn load(home: &Path) -> anyhow::Result<PicoConfig> {
        let path = home.join("pico.toml");
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text)
                .with_context(|| format!("bad configuration in {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(PicoConfig::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    pub fn store(&self, home: &Path) -> StoreConfig {
        let defaults = StoreConfig::embedded(home);
        StoreConfig {
            cold: self.cold.clone().unwrap_or(defaults.cold),
            local: self.local.clone().unwrap_or(defaults.local),
            hot: self.hot.clone().unwrap_or(defaults.hot),
            retention: self.retention.clone().unwrap_or(defaults.retention),
            gc: self.gc.clone().unwrap_or(defaults.gc),
        }
    }

    pub fn worker(&self, home: &Path) -> worker::WorkerConfig {
        self.worker
            .clone()
            .unwrap_or_else(|| worker::WorkerConfig::embedded(home))
    }
}

/// The home directory: `--home`, else `$PICO_HOME`, else `/var/lib/pico`.
pub fn home_dir(arg: Option<PathBuf>) -> PathBuf {
    arg.unwrap_or_else(|| PathBuf::from("/var/lib/pico"))
}
