//! `pico.toml`: one typed section per part, unknown keys rejected, embedded defaults for all.
//!
//! The file only needs what differs from the defaults: `[hot]`, `[local]`, `[retention]`, `[gc]`,
//! `[worker]`, `[hub]` and `[prices]` keys are laid over the embedded defaults one by one; `[cold]` names a whole backend
//! (`kind = "dir"` or another kind) and replaces the default section. Every field is documented in
//! docs/configuration.md.
//!
//! A file that does not read is reported as every problem found in it, each at its key and line
//! (`problems`); `pico config check` reports the same, and the rules the worker and the hub
//! check when they start.

#[cfg(test)]
mod documented;
mod located;
pub mod problems;

use std::path::{Path, PathBuf};

use anyhow::Context;
use hub::HubConfig;
use located::{KeyPath, Located, Position};
use pagestore::accounting::Prices;
use pagestore::config::StoreConfig;
use problems::{Problem, Problems};
use serde::{Deserialize, Serialize};
use worker::WorkerConfig;

fn default_hub() -> HubConfig {
    HubConfig::embedded(Path::new("/"))
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PicoConfig {
    #[serde(flatten)]
    pub store: StoreConfig,
    pub worker: WorkerConfig,
    /// The hub (`pico hub run`, `pico hub ls`).
    #[serde(default = "default_hub")]
    pub hub: HubConfig,
    /// Cold-tier prices for `pico report cost`.
    #[serde(default)]
    pub prices: Prices,
}

/// Sections merged key by key over their defaults; any other section replaces its default.
const MERGED_SECTIONS: &[&str] = &["hot", "local", "retention", "gc", "worker", "hub", "prices"];

impl PicoConfig {
    pub fn embedded(home: &Path) -> PicoConfig {
        PicoConfig {
            store: StoreConfig::embedded(home),
            worker: WorkerConfig::embedded(home),
            hub: HubConfig::embedded(home),
            prices: Prices::default(),
        }
    }

    /// Points every part at the hub whose API is `addr` (`--hub`), HTTPS trusting `ca` when
    /// given: the CLI's requests to it, and the worker's reports.
    pub fn point_at_hub(&mut self, addr: std::net::SocketAddr, ca: Option<PathBuf>) {
        self.hub.api_listen = addr;
        if ca.is_some() {
            self.hub.tls_ca_file = ca.clone();
        }
        let link = self
            .worker
            .hub
            .get_or_insert_with(|| worker::HubLinkConfig::at(addr));
        link.addr = addr;
        link.ca_file = ca;
    }

    /// What a client of an HTTPS hub trusts: `$PICO_HUB_CA`, else `[worker.hub] ca_file`, else
    /// `[hub] tls_ca_file` or `tls_cert_file` (on the hub's machine).
    pub fn hub_ca(&self) -> Option<PathBuf> {
        std::env::var_os("PICO_HUB_CA")
            .map(PathBuf::from)
            .or_else(|| self.worker.hub.as_ref().and_then(|l| l.ca_file.clone()))
            .or_else(|| self.hub.tls_ca_file.clone())
            .or_else(|| self.hub.tls_cert_file.clone())
    }

    /// Loads `HOME/pico.toml` over the embedded defaults (all defaults if there is no file).
    pub fn load(home: &Path) -> anyhow::Result<PicoConfig> {
        let path = home.join("pico.toml");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::embedded(home)),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        Ok(Self::from_text(home, &path, &text)?)
    }

    /// Loads `file` over the embedded defaults of `home` (`--config`): the file must exist.
    pub fn load_file(home: &Path, file: &Path) -> anyhow::Result<PicoConfig> {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the configuration {}", file.display()))?;
        Ok(Self::from_text(home, file, &text)?)
    }

    /// `text`, the content of `file`, over the embedded defaults of `home`; when it does not
    /// read, every problem found, each at its key and line.
    pub fn from_text(home: &Path, file: &Path, text: &str) -> Result<PicoConfig, Problems> {
        Self::read(home, file, text).map(|read| read.config)
    }

    /// [`PicoConfig::from_text`], then the rules the worker and the hub check when they start
    /// (`pico config check`).
    pub fn check(home: &Path, file: &Path, text: &str) -> Result<Read, Problems> {
        let read = Self::read(home, file, text)?;
        let located = Located::parse(text).map_err(|e| Problems {
            file: file.to_path_buf(),
            list: vec![Problem::new(e.at, &KeyPath::default(), e.message)],
        })?;
        let list = problems::rules(&read.config, &read.user, &located);
        match list.is_empty() {
            true => Ok(read),
            false => Err(Problems {
                file: file.to_path_buf(),
                list,
            }),
        }
    }

    /// [`PicoConfig::from_text`] of a file named `pico.toml`.
    #[cfg(test)]
    pub fn parse(home: &Path, text: &str) -> Result<PicoConfig, Problems> {
        Self::from_text(home, Path::new("pico.toml"), text)
    }

    fn read(home: &Path, file: &Path, text: &str) -> Result<Read, Problems> {
        let fail = |list| Problems {
            file: file.to_path_buf(),
            list,
        };
        let whole =
            |at, message: String| fail(vec![Problem::new(at, &KeyPath::default(), message)]);
        // Where each key stands is read only when a problem must be placed (or checked).
        let locate = || Located::parse(text).map_err(|e| whole(e.at, e.message));
        let user: toml::Table = match toml::from_str(text) {
            Ok(user) => user,
            Err(e) => {
                locate()?;
                let at = e
                    .span()
                    .map_or(Position::START, |s| Position::at(text, s.start));
                return Err(whole(at, located::one_line(e.message())));
            }
        };
        let mut merged = toml::Table::try_from(Self::embedded(home))
            .map_err(|e| whole(Position::START, format!("the embedded defaults: {e}")))?;
        for (section, value) in user.clone() {
            let value = overlay_section(&merged, &section, value);
            merged.insert(section, value);
        }
        match merged.try_into::<PicoConfig>() {
            Ok(config) => Ok(Read { config, user }),
            Err(e) => {
                let located = locate()?;
                let defaults = toml::Table::try_from(Self::embedded(home))
                    .map_err(|e| whole(Position::START, format!("the embedded defaults: {e}")))?;
                let list = problems::typed(&defaults, &user, &located);
                Err(match list.is_empty() {
                    // The sections read one by one, but not together: say what serde says.
                    true => whole(Position::START, e.message().trim().to_string()),
                    false => fail(list),
                })
            }
        }
    }
}

/// A configuration read from a file: the effective one, and the file's own sections.
pub struct Read {
    pub config: PicoConfig,
    /// The sections as the file gives them (before the defaults).
    pub user: toml::Table,
}

/// Section `name` as the user's `value` makes it: laid over its default key by key when it is
/// one of [`MERGED_SECTIONS`], else `value` itself.
fn overlay_section(defaults: &toml::Table, name: &str, value: toml::Value) -> toml::Value {
    match (defaults.get(name), value) {
        (Some(toml::Value::Table(base)), toml::Value::Table(over))
            if MERGED_SECTIONS.contains(&name) =>
        {
            let mut merged = base.clone();
            merged.extend(over);
            toml::Value::Table(merged)
        }
        (_, value) => value,
    }
}

/// The home directory: `--home`, else `$PICO_HOME`, else `/var/lib/pico`; absolute (a relative
/// one is taken from the current directory): the worker hands paths under it to CRIU, which
/// runs elsewhere (a relative home left every sandboxed tenant unrestorable: "Can't open ns
/// file h2/tenants/…/netns").
pub fn home_dir(arg: Option<PathBuf>) -> PathBuf {
    let home = arg.unwrap_or_else(|| PathBuf::from("/var/lib/pico"));
    std::path::absolute(&home).unwrap_or(home)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relative_home_is_made_absolute() {
        let home = home_dir(Some(PathBuf::from("h2")));
        assert!(home.is_absolute(), "{}", home.display());
        assert!(home.ends_with("h2"), "{}", home.display());
        assert_eq!(home_dir(None), Path::new("/var/lib/pico"));
    }

    #[test]
    fn defaults_without_a_file() {
        let c = PicoConfig::parse(Path::new("/h"), "").unwrap();
        assert_eq!(c.worker.socket, Path::new("/h/worker.sock"));
        assert_eq!(c.store, StoreConfig::embedded(Path::new("/h")));
    }

    #[test]
    fn a_partial_section_overlays_the_defaults() {
        let c = PicoConfig::parse(Path::new("/h"), "[worker]\ncriu = \"/opt/criu\"\n").unwrap();
        assert_eq!(c.worker.criu, Path::new("/opt/criu"));
        assert_eq!(c.worker.tenants_dir, Path::new("/h/tenants"));
    }

    #[test]
    fn the_tcp_api_is_off_unless_configured() {
        let c = PicoConfig::parse(Path::new("/h"), "").unwrap();
        assert_eq!((c.worker.api_listen, c.worker.api_token_file), (None, None));
        let c = PicoConfig::parse(
            Path::new("/h"),
            "[worker]\napi_listen = \"127.0.0.1:7070\"\napi_token_file = \"/etc/pico/token\"\n",
        )
        .unwrap();
        assert_eq!(c.worker.api_listen, Some(([127, 0, 0, 1], 7070).into()));
        assert_eq!(
            c.worker.api_token_file.as_deref(),
            Some(Path::new("/etc/pico/token"))
        );
    }

    #[test]
    fn cold_replaces_the_default_backend() {
        let c = PicoConfig::parse(
            Path::new("/h"),
            "[cold]\nkind = \"dir\"\npath = \"/data\"\n",
        )
        .unwrap();
        assert_eq!(
            c.store.cold,
            pagestore::config::ColdConfig::Dir {
                path: "/data".into()
            }
        );
    }

    #[test]
    fn prices_default_to_s3_standard_and_overlay_key_by_key() {
        let c = PicoConfig::parse(Path::new("/h"), "").unwrap();
        assert_eq!(c.prices, Prices::default());
        assert!(c.prices.source.contains("S3 Standard"));
        let c = PicoConfig::parse(Path::new("/h"), "[prices]\nstorage_gb_month = 0.01\n").unwrap();
        assert_eq!(c.prices.storage_gb_month, 0.01);
        assert_eq!(c.prices.put_per_1000, Prices::default().put_per_1000);
        assert!(PicoConfig::parse(Path::new("/h"), "[prices]\nstorage = 1.0\n").is_err());
    }

    #[test]
    fn retention_and_gc_overlay_their_defaults() {
        let c = PicoConfig::parse(Path::new("/h"), "[retention]\nkeep_last = 3\n").unwrap();
        assert_eq!(c.store.retention.keep_last, 3);
        assert_eq!(c.store.gc, pagestore::config::GcConfig::default());
        let c = PicoConfig::parse(Path::new("/h"), "[gc]\nrepack_below = 0.25\n").unwrap();
        assert_eq!(c.store.gc.repack_below, 0.25);
        assert!(PicoConfig::parse(Path::new("/h"), "[gc]\nrepack = 1\n").is_err());
    }

    #[test]
    fn local_engine_overlays_and_unknown_engines_are_refused() {
        let c = PicoConfig::parse(Path::new("/h"), "[local]\nengine = \"fjall\"\n").unwrap();
        assert_eq!(c.store.local.engine, pagestore::config::LocalEngine::Fjall);
        assert_eq!(c.store.local.path, Path::new("/h/local"));
        let err = PicoConfig::parse(Path::new("/h"), "[local]\nengine = \"lmdb\"\n").unwrap_err();
        assert!(
            format!("{err:#}").contains("expected `sled` or `fjall`"),
            "{err:#}"
        );
    }

    #[test]
    fn a_named_file_must_exist_and_is_read_over_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let missing = PicoConfig::load_file(Path::new("/h"), &dir.path().join("nope.toml"));
        assert!(format!("{:#}", missing.unwrap_err()).contains("nope.toml"));
        let file = dir.path().join("pico.toml");
        std::fs::write(&file, "[worker]\ncriu = \"/opt/criu\"\n").unwrap();
        let c = PicoConfig::load_file(Path::new("/h"), &file).unwrap();
        assert_eq!(c.worker.criu, Path::new("/opt/criu"));
        assert_eq!(c.worker.socket, Path::new("/h/worker.sock"));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = PicoConfig::parse(Path::new("/h"), "[worker]\ncriuu = \"x\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("criuu"), "{err:#}");
        assert!(PicoConfig::parse(Path::new("/h"), "[nonsense]\na = 1\n").is_err());
    }

    /// The package's /etc/pico/pico.toml (deploy/pico.toml) loads as shipped, and each block of
    /// commented settings loads once uncommented: an operator who removes the '#' gets a valid file.
    #[test]
    fn the_packaged_configuration_and_each_of_its_examples_load() {
        let text = include_str!("../../deploy/pico.toml");
        let home = Path::new("/var/lib/pico");
        let shipped = PicoConfig::parse(home, text).unwrap();
        assert_eq!(shipped.store, StoreConfig::embedded(home));
        let mut blocks: Vec<Vec<String>> = vec![Vec::new()];
        let mut section = String::new();
        for line in text.lines() {
            let setting = line
                .strip_prefix('#')
                .filter(|rest| rest.starts_with(|c: char| c.is_ascii_lowercase() || c == '['));
            match (setting, line.starts_with('[')) {
                (Some(setting), _) => {
                    let block = blocks.last_mut().unwrap();
                    if block.is_empty() && !setting.starts_with('[') {
                        block.push(section.clone());
                    }
                    if setting.starts_with('[') {
                        section = setting.to_string();
                    }
                    block.push(setting.to_string());
                }
                (None, true) => section = line.to_string(),
                (None, false) => blocks.push(Vec::new()),
            }
        }
        let blocks: Vec<String> = blocks
            .into_iter()
            .filter(|b| !b.is_empty())
            .map(|b| b.join("\n"))
            .collect();
        assert!(blocks.len() >= 8, "{blocks:#?}");
        for block in &blocks {
            if let Err(e) = PicoConfig::parse(home, block) {
                panic!("uncommented, this does not load: {e:#}\n{block}");
            }
        }
    }
}
