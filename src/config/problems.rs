//! What is wrong with a `pico.toml`: every problem found, each as `FILE:LINE:COL: KEY: what is
//! wrong`, the key's dotted path and the line the user wrote it on.
//!
//! The loader reads the user's sections laid over the embedded defaults, a merged table without
//! positions, and serde stops at a struct's first error. So when that fails, the same merged
//! sections are read again one by one, the path of each error taken by `serde_path_to_error`
//! and its position from [`Located`]; after an error the bad key is dropped (its default applies
//! again) and the section read once more, so that one run reports every bad key of a section
//! until a required one is missing.
//!
//! The rules serde cannot check (`api_listen` without a token, `[worker.hub]` without that API,
//! `lease_ms` not under `dead_after_ms`, TLS or token files that do not load) are the worker's
//! and the hub's own start-up checks (`worker::daemon::preflight`, `hub::daemon::preflight`),
//! which `pico config check` runs before any daemon does.

use std::fmt;
use std::path::{Path, PathBuf};

use hub::HubConfig;
use pagestore::accounting::Prices;
use pagestore::config::{ColdConfig, GcConfig, HotConfig, LocalConfig, RetentionConfig, S3Config};
use serde::de::DeserializeOwned;
use serde::Serialize;
use worker::WorkerConfig;

use super::located::{KeyPath, Located, Position, Seg};
use super::PicoConfig;

/// One problem: where, which key, what is wrong.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Problem {
    pub line: usize,
    pub col: usize,
    /// The key's dotted path (`worker.criuu`, `cold.bucket`); empty for the file as a whole.
    pub key: String,
    pub message: String,
}

impl Problem {
    pub fn new(at: Position, key: &KeyPath, message: impl Into<String>) -> Problem {
        Problem {
            line: at.line,
            col: at.col,
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// A problem of `key`, placed where `located` has it.
    fn at(located: &Located, key: &KeyPath, message: impl Into<String>) -> Problem {
        Problem::new(located.position(key), key, message)
    }
}

/// Every problem found in one file.
#[derive(Debug)]
pub struct Problems {
    pub file: PathBuf,
    pub list: Vec<Problem>,
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.list.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{}:{}: ", self.file.display(), p.line, p.col)?;
            if !p.key.is_empty() {
                write!(f, "{}: ", p.key)?;
            }
            write!(f, "{}", p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

type SectionError = serde_path_to_error::Error<toml::de::Error>;

/// Reads one section as its type, for the path of its first error.
type Reader = fn(toml::Value) -> Result<(), SectionError>;

fn read_as<T: DeserializeOwned>(value: toml::Value) -> Result<(), SectionError> {
    serde_path_to_error::deserialize::<_, T>(value).map(drop)
}

/// The sections of `pico.toml` and their types (those of [`PicoConfig`]).
pub const SECTIONS: &[(&str, Reader)] = &[
    ("cold", read_as::<ColdConfig>),
    ("local", read_as::<LocalConfig>),
    ("hot", read_as::<HotConfig>),
    ("retention", read_as::<RetentionConfig>),
    ("gc", read_as::<GcConfig>),
    ("worker", read_as::<WorkerConfig>),
    ("hub", read_as::<HubConfig>),
    ("prices", read_as::<Prices>),
];

/// The most errors reported per section (each costs one more read of it).
const MAX_PER_SECTION: usize = 32;

/// The type errors of the user's sections `user` laid over `defaults` (the embedded
/// configuration as a table), in the order written.
pub fn typed(defaults: &toml::Table, user: &toml::Table, located: &Located) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (name, value) in user {
        match SECTIONS.iter().find(|(section, _)| section == name) {
            Some((_, reader)) => section(defaults, name, value, *reader, located, &mut problems),
            None => problems.push(Problem::at(
                located,
                &KeyPath::of(&[name]),
                unknown("section", name, SECTIONS.iter().map(|(s, _)| *s)),
            )),
        }
    }
    problems.sort_by_key(|p| (p.line, p.col));
    problems
}

/// The problems of section `name`, read again after each with its bad key dropped.
fn section(
    defaults: &toml::Table,
    name: &str,
    value: &toml::Value,
    reader: Reader,
    located: &Located,
    problems: &mut Vec<Problem>,
) {
    let mut user = value.clone();
    let mut dropped: Vec<KeyPath> = Vec::new();
    for _ in 0..MAX_PER_SECTION {
        let (reader, read) = match s3_fields(name, &user) {
            Some(fields) => (read_as::<S3Config> as Reader, fields),
            None => (reader, super::overlay_section(defaults, name, user.clone())),
        };
        let Err(e) = reader(read) else {
            return;
        };
        let (path, message) = interpret(e, &user);
        if dropped.contains(&path) {
            // A required key whose bad value was dropped: already reported.
            return;
        }
        let key = KeyPath::of(&[name]).join_all(&path);
        problems.push(Problem::at(located, &key, message));
        let removed = match (user.as_table_mut(), path.0.first()) {
            (Some(table), Some(Seg::Key(first))) => table.remove(first).is_some(),
            _ => false,
        };
        if !removed {
            return;
        }
        dropped.push(path);
    }
}

/// `[cold] kind = "s3"`'s other keys, read as [`S3Config`] itself: serde reads an internally
/// tagged enum through a buffer that loses the path of an error inside it.
fn s3_fields(section: &str, value: &toml::Value) -> Option<toml::Value> {
    let table = value.as_table()?;
    if section != "cold" || table.get("kind").and_then(|k| k.as_str()) != Some("s3") {
        return None;
    }
    let mut fields = table.clone();
    fields.remove("kind");
    Some(toml::Value::Table(fields))
}

/// The key an error is about (relative to its section) and what to say about it.
fn interpret(e: SectionError, section: &toml::Value) -> (KeyPath, String) {
    let mut path = KeyPath(
        e.path()
            .iter()
            .filter_map(|seg| match seg {
                serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.clone())),
                serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
                _ => None,
            })
            .collect(),
    );
    let message = e.into_inner().message().trim().to_string();
    if let Some(field) = quoted_after(&message, "unknown field ") {
        if path.last_key() != Some(field) {
            path = path.join(Seg::Key(field.to_string()));
        }
        let expected = expected(&message);
        return (path, unknown("key", field, expected.iter().copied()));
    }
    if let Some(field) = quoted_after(&message, "missing field ") {
        path = path.join(Seg::Key(field.to_string()));
        return (
            path,
            "missing: required here (it has no default)".to_string(),
        );
    }
    if message.starts_with("unknown variant ") && path.0.is_empty() && section.get("kind").is_some()
    {
        // `[cold] kind`: the tag of an enum, read before its fields.
        path = path.join(Seg::Key("kind".to_string()));
    }
    (path, message)
}

/// The name in backquotes right after `prefix` at the start of `message`.
fn quoted_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = message.strip_prefix(prefix)?.strip_prefix('`')?;
    rest.split('`').next()
}

/// The names serde lists after "expected" (`expected one of `a`, `b``, `expected `a` or `b``).
fn expected(message: &str) -> Vec<&str> {
    let Some((_, list)) = message.split_once("expected") else {
        return Vec::new();
    };
    list.split('`').skip(1).step_by(2).collect()
}

/// "unknown WHAT" with the nearest known name, or the list of them when it is short.
fn unknown<'a>(what: &str, name: &str, known: impl Iterator<Item = &'a str>) -> String {
    let known: Vec<&str> = known.collect();
    let nearest = known
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .min()
        .filter(|(d, k)| *d <= (k.len() / 3).max(2));
    match nearest {
        Some((_, k)) => format!("unknown {what}; did you mean `{k}`?"),
        None if known.is_empty() => format!("unknown {what}"),
        None if known.len() <= 8 => format!(
            "unknown {what}; expected one of {}",
            known
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => format!("unknown {what} (every key: docs/configuration.md)"),
    }
}

/// Levenshtein distance, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (diagonal + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// The rules serde cannot check, as the worker and the hub apply them when they start: the
/// worker's always (they concern only `api_listen` and `[worker.hub]`), the hub's when the file
/// has a `[hub]` section; and that a CRIU named by its path exists.
pub fn rules(config: &PicoConfig, user: &toml::Table, located: &Located) -> Vec<Problem> {
    let mut problems = Vec::new();
    let w = &config.worker;
    if let Err(e) = worker::daemon::preflight(w) {
        let message = e.to_string();
        let files = [
            (
                KeyPath::of(&["worker", "api_token_file"]),
                w.api_token_file.as_deref(),
            ),
            (
                KeyPath::of(&["worker", "hub", "token_file"]),
                w.hub.as_ref().and_then(|h| h.token_file.as_deref()),
            ),
            (
                KeyPath::of(&["worker", "hub", "ca_file"]),
                w.hub.as_ref().and_then(|h| h.ca_file.as_deref()),
            ),
        ];
        let key = named_file(&message, &files).unwrap_or_else(|| match e {
            worker::Error::ApiTokenMissing { .. } => KeyPath::of(&["worker", "api_listen"]),
            _ if w.hub.is_some() => KeyPath::of(&["worker", "hub"]),
            _ => KeyPath::of(&["worker"]),
        });
        problems.push(Problem::at(located, &key, message));
    }
    if user.contains_key("hub") {
        if let Err(e) = hub::daemon::preflight(&config.hub) {
            problems.push(hub_problem(&config.hub, &e, located));
        }
    }
    let criu = &w.criu;
    if criu.components().count() > 1 && !criu.exists() {
        problems.push(Problem::at(
            located,
            &KeyPath::of(&["worker", "criu"]),
            format!("{} does not exist", criu.display()),
        ));
    }
    problems.sort_by_key(|p| (p.line, p.col));
    problems
}

fn hub_problem(h: &HubConfig, e: &hub::HubError, located: &Located) -> Problem {
    let message = e.to_string();
    let file_keys = [
        ("tls_cert_file", h.tls_cert_file.as_deref()),
        ("tls_key_file", h.tls_key_file.as_deref()),
        ("token_file", h.token_file.as_deref()),
        ("worker_token_file", h.worker_token_file.as_deref()),
    ];
    let files: Vec<(KeyPath, Option<&Path>)> = file_keys
        .iter()
        .map(|(k, p)| (KeyPath::of(&["hub", k]), *p))
        .collect();
    let key = named_file(&message, &files).unwrap_or_else(|| match e {
        hub::HubError::LeaseTooLong { .. } => KeyPath::of(&["hub", "lease_ms"]),
        hub::HubError::Tls(_) if h.tls_cert_file.is_some() => {
            KeyPath::of(&["hub", "tls_cert_file"])
        }
        hub::HubError::Tls(_) => KeyPath::of(&["hub", "tls_key_file"]),
        _ => KeyPath::of(&["hub"]),
    });
    Problem::at(located, &key, message)
}

/// The key whose file `message` names, if any.
fn named_file(message: &str, files: &[(KeyPath, Option<&Path>)]) -> Option<KeyPath> {
    files.iter().find_map(|(key, path)| {
        let path = (*path)?.display().to_string();
        message.contains(&path).then(|| key.clone())
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::PicoConfig;
    use super::Problems;

    /// `(line, col, key, message)` of each problem.
    type Found = Vec<(usize, usize, String, String)>;

    fn found(result: Result<(), Problems>) -> Found {
        match result {
            Ok(()) => Vec::new(),
            Err(p) => p
                .list
                .into_iter()
                .map(|p| (p.line, p.col, p.key, p.message))
                .collect(),
        }
    }

    /// The problems of reading `text` (what every command does).
    fn read(text: &str) -> Found {
        found(PicoConfig::from_text(Path::new("/h"), Path::new("p.toml"), text).map(drop))
    }

    /// The problems `pico config check` finds in `text`.
    fn check(text: &str) -> Found {
        // The worker's and the hub's tokens come from here first: these tests are about files.
        std::env::remove_var(worker::protocol::TOKEN_VAR);
        found(PicoConfig::check(Path::new("/h"), Path::new("p.toml"), text).map(drop))
    }

    fn one(found: Found) -> (usize, usize, String, String) {
        assert_eq!(found.len(), 1, "{found:#?}");
        found.into_iter().next().unwrap_or_default()
    }

    #[test]
    fn an_unknown_key_is_named_at_its_line_with_the_nearest_key() {
        let text = "[worker]\ncriu = \"criu\"\ncriuu = \"x\"\n";
        let err = PicoConfig::from_text(Path::new("/h"), Path::new("p.toml"), text).unwrap_err();
        assert_eq!(
            err.to_string(),
            "p.toml:3:1: worker.criuu: unknown key; did you mean `criu`?"
        );
        let (line, _, key, message) = one(read("\n\n[prices]\n  storage = 1.0\n"));
        assert_eq!((line, key.as_str()), (4, "prices.storage"));
        assert!(message.starts_with("unknown key; "), "{message}");
    }

    #[test]
    fn an_unknown_section_is_named_at_its_header() {
        let (line, col, key, message) = one(read("[hot]\nmax_bytes = 1\n\n[wrker]\na = 1\n"));
        assert_eq!((line, col, key.as_str()), (4, 1, "wrker"));
        assert_eq!(message, "unknown section; did you mean `worker`?");
        let (_, _, _, message) = one(read("[nonsense]\n"));
        assert!(message.contains("one of `cold`, `local`"), "{message}");
    }

    #[test]
    fn a_wrong_type_is_named_at_its_key() {
        let (line, col, key, message) = one(read("[hub]\nzone = \"z.\"\nttl_s = \"one\"\n"));
        assert_eq!((line, col, key.as_str()), (3, 1, "hub.ttl_s"));
        assert!(
            message.contains("invalid type: string \"one\""),
            "{message}"
        );
        // An element of an array: its own column.
        let (line, col, key, _) = one(read("[worker]\nhidden_from_tenants = [\"/a\", 3]\n"));
        assert_eq!(
            (line, col, key.as_str()),
            (2, 30, "worker.hidden_from_tenants[1]")
        );
    }

    #[test]
    fn a_bad_enum_value_is_named_with_the_values_allowed() {
        let (line, _, key, message) = one(read("[worker]\non_stop = \"pause\"\n"));
        assert_eq!((line, key.as_str()), (2, "worker.on_stop"));
        assert!(
            message.contains("unknown variant `pause`, expected `swap-out` or `leave-running`"),
            "{message}"
        );
        let (line, _, key, _) = one(read("# cold\n[cold]\nkind = \"ftp\"\n"));
        assert_eq!((line, key.as_str()), (3, "cold.kind"));
    }

    #[test]
    fn a_missing_required_key_is_placed_at_its_section_header() {
        let text = "[worker]\ncriu = \"criu\"\n\n[cold]\nkind = \"s3\"\n\
                    endpoint = \"http://127.0.0.1:3900\"\naccess_key_id = \"GK1\"\n\
                    secret_access_key = \"s\"\n";
        let (line, col, key, message) = one(read(text));
        assert_eq!((line, col, key.as_str()), (4, 1, "cold.bucket"));
        assert_eq!(message, "missing: required here (it has no default)");
        let (line, _, key, _) = one(read("[cold]\npath = \"/c\"\n"));
        assert_eq!((line, key.as_str()), (1, "cold.kind"));
    }

    #[test]
    fn s3_fields_are_named_precisely() {
        let text = "[cold]\nkind = \"s3\"\nendpoint = \"http://e\"\nbucket = \"b\"\n\
                    access_key_id = \"k\"\nsecret_access_key = \"s\"\nregion = 5\nprefx = \"p\"\n";
        let found = read(text);
        let keys: Vec<(usize, &str)> = found.iter().map(|f| (f.0, f.2.as_str())).collect();
        assert_eq!(keys, [(7, "cold.region"), (8, "cold.prefx")]);
    }

    #[test]
    fn every_bad_key_of_a_file_is_reported_in_one_run_in_line_order() {
        let text = "[worker]\ncriuu = \"x\"\nstart_timeout_ms = \"ten\"\n\n[worker.hub]\n\
                    addr = \"nope\"\n\n[hub]\nlease = 1\n\n[local]\nengine = \"lmdb\"\n";
        let keys: Vec<(usize, String)> = read(text).into_iter().map(|f| (f.0, f.2)).collect();
        assert_eq!(
            keys,
            [
                (2, "worker.criuu".to_string()),
                (3, "worker.start_timeout_ms".to_string()),
                (6, "worker.hub.addr".to_string()),
                (9, "hub.lease".to_string()),
                (12, "local.engine".to_string()),
            ]
        );
    }

    #[test]
    fn dotted_keys_and_inline_tables_are_found_too() {
        let (line, _, key, _) = one(read("# x\nworker.hub = { addr = 5 }\n"));
        assert_eq!((line, key.as_str()), (2, "worker.hub.addr"));
        let (line, _, key, _) = one(read("[worker]\nhub.adr = \"127.0.0.1:1\"\n"));
        assert_eq!((line, key.as_str()), (2, "worker.hub.adr"));
    }

    #[test]
    fn a_syntax_error_is_placed_where_the_parser_stopped() {
        let (line, _, key, message) = one(read("[worker]\ncriu = \"criu\n"));
        assert_eq!((line, key.as_str()), (2, ""));
        assert!(!message.contains('\n'), "{message}");
    }

    #[test]
    fn check_applies_the_workers_start_rules() {
        let (line, _, key, message) = one(check("[worker]\napi_listen = \"127.0.0.1:7070\"\n"));
        assert_eq!((line, key.as_str()), (2, "worker.api_listen"));
        assert!(message.contains("needs api_token_file"), "{message}");
        let text = "[worker]\napi_listen = \"127.0.0.1:7070\"\n\
                    api_token_file = \"/nonexistent/token\"\n";
        let (line, _, key, _) = one(check(text));
        assert_eq!((line, key.as_str()), (3, "worker.api_token_file"));
        let (line, _, key, message) = one(check("\n[worker.hub]\naddr = \"127.0.0.1:7071\"\n"));
        assert_eq!((line, key.as_str()), (2, "worker.hub"));
        assert!(message.contains("needs api_listen"), "{message}");
        let (line, _, key, _) = one(check("[worker]\ncriu = \"/nonexistent/criu\"\n"));
        assert_eq!((line, key.as_str()), (2, "worker.criu"));
        // Reading alone does not apply them: `pico store ls` does not need a worker's token.
        assert_eq!(read("[worker]\napi_listen = \"127.0.0.1:7070\"\n"), []);
    }

    #[test]
    fn check_applies_the_hubs_start_rules_when_there_is_a_hub_section() {
        let (line, _, key, message) = one(check("[hub]\nlease_ms = 20000\n"));
        assert_eq!((line, key.as_str()), (2, "hub.lease_ms"));
        assert!(
            message.contains("must be shorter than dead_after_ms"),
            "{message}"
        );
        let (line, _, key, message) = one(check("[hub]\n\ntls_cert_file = \"/c.pem\"\n"));
        assert_eq!((line, key.as_str()), (3, "hub.tls_cert_file"));
        assert!(message.contains("go together"), "{message}");
        let (line, _, key, _) = one(check("[hub]\nzone = \"z.\"\n"));
        assert_eq!((line, key.as_str()), (1, "hub"));
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "t0ken\n").unwrap();
        let good = format!(
            "[hub]\ntoken_file = {token:?}\n\n[worker]\napi_listen = \"127.0.0.1:7070\"\n\
             api_token_file = {token:?}\n"
        );
        assert_eq!(check(&good), []);
        assert_eq!(check(""), []);
    }
}
