//! The one error type of the page store.

use std::path::PathBuf;

use crate::page::PageId;
use crate::tier::Tier;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("page {page} read from the {tier} tier does not match its id (corrupt store object {object})")]
    CorruptPage {
        page: PageId,
        tier: Tier,
        object: String,
    },

    #[error(
        "the zstd frame at byte {offset} of {object} ({tier} tier), which holds page {page}, \
         does not decode: {reason} (corrupt store object; `pico store verify` lists every one)"
    )]
    CorruptFrame {
        page: PageId,
        tier: Tier,
        object: String,
        offset: u64,
        reason: String,
    },

    #[error("page {0} is referenced but not present in any tier")]
    PageMissing(PageId),

    #[error("corrupt {what} {object}: {reason}")]
    CorruptObject {
        what: &'static str,
        object: String,
        reason: String,
    },

    #[error("bad manifest: {0}")]
    BadManifest(String),

    /// An object of a format version this build does not know (`crate::format`): written by a
    /// newer picocenter, never read as an older version.
    #[error(
        "{what} {object} is format version {found}, and this build reads versions 1 to \
         {supported}: it was written by a newer picocenter (read it with that version or a later one)"
    )]
    UnsupportedVersion {
        what: &'static str,
        object: String,
        found: u32,
        supported: u32,
    },

    #[error("checkpoint {0} not found (see `pico store ls`)")]
    CheckpointNotFound(String),

    #[error("checkpoint id {0:?} is ambiguous; give more of it")]
    AmbiguousCheckpoint(String),

    #[error("cannot ingest {path}: {reason}")]
    BadInput { path: PathBuf, reason: String },

    #[error("cold tier object {0} not found")]
    ObjectNotFound(String),

    #[error("local tier ({engine}) at {path}: {source} (it is only a cache: removing the directory loses nothing)")]
    Local {
        engine: &'static str,
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    #[error(
        "cold tier ({store}): {op} {key} failed after {attempts} attempt(s): {message} \
         (is the object store up, and is the [cold] section of pico.toml right?)"
    )]
    Cold {
        store: String,
        op: &'static str,
        key: String,
        attempts: u32,
        message: String,
    },

    /// The failure of a cold read that several readers shared (single flight).
    #[error(transparent)]
    Shared(std::sync::Arc<Error>),

    #[error("cannot {what} now: {holder} holds a conflicting lock (retry later; a lock of a dead process is ignored)")]
    Busy { what: &'static str, holder: String },

    /// Work its caller stopped (a worker stopping its scheduled gc): nothing was left half done.
    #[error("{0} was stopped before it finished")]
    Stopped(&'static str),

    /// A `pico.toml` setting the store cannot work with.
    #[error("bad store configuration: {0}")]
    Config(String),

    #[error("invalid object key {key:?}: keys are `/`-separated names, none empty, `.`, `..` or starting with `.tmp`")]
    InvalidObjectKey { key: String },

    #[error("invalid metadata name {kind}/{owner}: both parts must be valid tenant names")]
    InvalidMetaName { kind: String, owner: String },

    #[error("cannot encode {what} as JSON: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },

    #[error("local tier at {path} is held by another process (stop it, or use another path)")]
    LocalHeld { path: PathBuf },

    #[error("local tier at {path} was taken by another process while it was emptied; restart this process to use it again (it is only a cache)")]
    LocalTakenWhileEmptied { path: PathBuf },

    #[error("local tier at {path} could not be reopened after it was emptied; restart this process to use it again (it is only a cache)")]
    LocalNotReopened { path: PathBuf },
}

impl Error {
    /// Whether this is (or wraps) a missing cold-tier object.
    pub fn is_not_found(&self) -> bool {
        match self {
            Error::ObjectNotFound(_) => true,
            Error::Shared(e) => e.is_not_found(),
            _ => false,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
