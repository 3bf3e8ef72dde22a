//! docs/configuration.md stays true: its tables list every key of every section of `pico.toml`
//! and no other, and where a row shows a default as a value, it is the embedded one.
//!
//! The keys are the ones serde accepts: each section's type is asked for its field names (what
//! its derived `Deserialize` passes to `deserialize_struct`), so that a key added to a struct,
//! an optional one absent from the embedded defaults included, fails here until it is
//! documented.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};

use super::problems::SECTIONS;
use super::PicoConfig;

const PAGE: &str = include_str!("../../docs/configuration.md");

/// The field names `T`'s `Deserialize` accepts.
fn fields<T: DeserializeOwned>() -> BTreeSet<String> {
    struct Probe<'a>(&'a mut Vec<&'static str>);
    impl<'de> Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0.extend(fields);
            Err(de::Error::custom("probed"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut names = Vec::new();
    let _ = T::deserialize(Probe(&mut names));
    assert!(
        !names.is_empty(),
        "{} is not a struct",
        std::any::type_name::<T>()
    );
    names.into_iter().map(String::from).collect()
}

/// Every key of every section (`worker.hub` apart from `worker`).
fn every_key() -> BTreeMap<String, BTreeSet<String>> {
    use pagestore::config::*;
    let mut cold = fields::<S3Config>();
    // `kind = "dir"`'s fields: the variant of an internally tagged enum has no field list to
    // ask for, but the embedded default is that variant.
    let dir = toml::Table::try_from(ColdConfig::Dir {
        path: PathBuf::from("/c"),
    })
    .unwrap();
    cold.extend(dir.keys().cloned());
    let mut worker = fields::<worker::WorkerConfig>();
    worker.remove("hub");
    BTreeMap::from([
        ("cold".to_string(), cold),
        ("hot".to_string(), fields::<HotConfig>()),
        ("local".to_string(), fields::<LocalConfig>()),
        ("retention".to_string(), fields::<RetentionConfig>()),
        ("gc".to_string(), fields::<GcConfig>()),
        ("worker".to_string(), worker),
        ("worker.hub".to_string(), fields::<worker::HubLinkConfig>()),
        ("hub".to_string(), fields::<hub::HubConfig>()),
        (
            "prices".to_string(),
            fields::<pagestore::accounting::Prices>(),
        ),
    ])
}

/// The page's tables: section → key → its default column. A section starts at a heading
/// naming it (`## \`[worker]\` ...`); a row's first column may name several keys.
fn documented() -> BTreeMap<String, BTreeMap<String, String>> {
    let mut sections: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut section = None;
    for line in PAGE.lines() {
        if line.starts_with('#') {
            section = line
                .split_once("`[")
                .and_then(|(_, rest)| rest.split_once("]`"))
                .map(|(name, _)| name.to_string());
            continue;
        }
        let Some(section) = section.as_ref().filter(|_| line.starts_with("| `")) else {
            continue;
        };
        let columns: Vec<String> = line.split('|').map(|c| c.trim().to_string()).collect();
        let (Some(keys), Some(default)) = (columns.get(1), columns.get(2)) else {
            continue;
        };
        for key in keys.split('`').skip(1).step_by(2) {
            sections
                .entry(section.clone())
                .or_default()
                .insert(key.to_string(), default.clone());
        }
    }
    sections
}

#[test]
fn the_page_lists_every_key_of_every_section_and_no_other() {
    let documented = documented();
    let every = every_key();
    let names: BTreeSet<&str> = every.keys().map(String::as_str).collect();
    let mut sections: BTreeSet<&str> = SECTIONS.iter().map(|(name, _)| *name).collect();
    sections.insert("worker.hub");
    assert_eq!(names, sections, "the sections checked are pico.toml's");
    let on_page: BTreeSet<&str> = documented.keys().map(String::as_str).collect();
    assert_eq!(
        on_page, names,
        "docs/configuration.md: one table per section"
    );
    for (section, keys) in &every {
        let listed: BTreeSet<String> = documented[section].keys().cloned().collect();
        let missing: Vec<&String> = keys.difference(&listed).collect();
        let extra: Vec<&String> = listed.difference(keys).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "docs/configuration.md, [{section}]: keys not documented {missing:?}, keys that do \
             not exist {extra:?}"
        );
    }
}

#[test]
fn the_sections_checked_are_those_of_the_configuration() {
    let embedded = toml::Table::try_from(PicoConfig::embedded(Path::new("/h"))).unwrap();
    let sections: BTreeSet<&str> = SECTIONS.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        embedded.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        sections
    );
}

/// Rows whose default column describes the default instead of showing it.
const DESCRIBED: &[(&str, &str)] = &[("prices", "source"), ("worker", "max_concurrent_swaps")];

#[test]
fn the_defaults_shown_are_the_embedded_ones() {
    let documented = documented();
    let mut embedded = toml::Table::try_from(PicoConfig::embedded(Path::new("HOME"))).unwrap();
    let link = worker::HubLinkConfig::at(([127, 0, 0, 1], 7071).into());
    let mut link = toml::Table::try_from(link).unwrap();
    link.remove("addr");
    embedded.insert("worker.hub".into(), toml::Value::Table(link));
    let mut wrong = Vec::new();
    for (section, values) in &embedded {
        let Some(values) = values.as_table() else {
            continue;
        };
        for (key, value) in values {
            if value.is_table() || DESCRIBED.contains(&(section.as_str(), key.as_str())) {
                continue;
            }
            let Some(shown) = documented.get(section).and_then(|s| s.get(key)) else {
                continue; // the other test names it
            };
            let literal = format!("`{value}`");
            let bare = value.as_str().map(|s| format!("`{s}`"));
            let found = shown.contains(&literal) || bare.is_some_and(|b| shown.contains(&b));
            if !found {
                wrong.push(format!(
                    "[{section}] {key}: {literal}, the page says {shown:?}"
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "docs/configuration.md's defaults:\n{}",
        wrong.join("\n")
    );
}
