//! Format versions: every object and record picocenter keeps on disk says which version of its
//! format it is, so that a store or a registry written by one version is read right by every
//! later one, and nothing a newer version wrote is ever read as if it were older.
//!
//! The rule ([docs/store-format.md](../../docs/store-format.md#format-versions)): a reader reads
//! every version from 1 up to the newest it knows, and an object written before its format
//! carried a version is version 1; an object of a version it does not know is refused with
//! [`Error::UnsupportedVersion`], which names the object and both versions. A format changes
//! its version only when an older reader would misread the new form; what older readers skip
//! safely (a JSON field with a default) needs none.
//!
//! Binary objects carry the version in their header (packs in their footer); JSON records in a
//! field `format` beside their own ([`Versioned`] writes it, [`json_format`] checks it). This
//! module holds the rule and the JSON side of it, for every crate: the worker's and the hub's
//! records follow it too.

use serde::Serialize;

use crate::error::{Error, Result};

/// The field of a JSON record that holds its format version.
pub const FORMAT_FIELD: &str = "format";

/// A JSON record written with its format version: `{"format": N, ...the record's fields}`.
#[derive(Serialize)]
pub struct Versioned<'a, T: Serialize> {
    pub format: u32,
    #[serde(flatten)]
    pub record: &'a T,
}

/// `found` if this build reads it (1 to `newest`), else the error that names `what`, `object`
/// and both versions.
pub fn check(what: &'static str, object: &str, found: u32, newest: u32) -> Result<u32> {
    if (1..=newest).contains(&found) {
        Ok(found)
    } else {
        Err(Error::UnsupportedVersion {
            what,
            object: object.to_string(),
            found,
            supported: newest,
        })
    }
}

/// The format version of a JSON record (its `format` field; 1 when it has none: written before
/// the record carried a version), checked by [`check`].
pub fn json_format(
    what: &'static str,
    object: &str,
    record: &serde_json::Value,
    newest: u32,
) -> Result<u32> {
    let found = match record.get(FORMAT_FIELD) {
        None => 1,
        Some(v) => v.as_u64().and_then(|v| u32::try_from(v).ok()).unwrap_or(0),
    };
    check(what, object, found, newest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Rec {
        name: &'static str,
    }

    #[test]
    fn a_versioned_record_carries_its_format_first() {
        let text = serde_json::to_string(&Versioned {
            format: 1,
            record: &Rec { name: "a" },
        })
        .unwrap();
        assert_eq!(text, r#"{"format":1,"name":"a"}"#);
    }

    #[test]
    fn a_record_without_a_format_is_version_1_and_a_newer_one_is_refused() {
        let old: serde_json::Value = serde_json::from_str(r#"{"name":"a"}"#).unwrap();
        assert_eq!(json_format("tenant record", "x", &old, 1).unwrap(), 1);
        let newer: serde_json::Value = serde_json::from_str(r#"{"format":2}"#).unwrap();
        let err = json_format("tenant record", "t/tenant.json", &newer, 1).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("t/tenant.json") && text.contains("version 2") && text.contains('1'),
            "{text}"
        );
        let junk: serde_json::Value = serde_json::from_str(r#"{"format":"x"}"#).unwrap();
        assert!(json_format("tenant record", "x", &junk, 1).is_err());
    }
}
