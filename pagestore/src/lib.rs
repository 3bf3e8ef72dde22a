//! The page store: checkpointed memory, content-addressed by page.
//!
//! A checkpoint is a directory of files (usually a CRIU image directory). The files the caller
//! names ([`ingest::PagedFiles`]: for a CRIU image, its page files) and any large file are split
//! into 4 KiB pages named by their BLAKE3 hash; all-zero pages are never stored; every other page
//! is stored once, lz4-compressed, in immutable *packs* in the cold tier, however many
//! checkpoints and tenants share it. Other files are kept whole inside the checkpoint's
//! *manifest*, whose upload is the commit point of an ingest.
//!
//! Reads go memory → local tier (embedded KV) → cold tier (a directory, or S3), and every page read
//! from any tier is checked against its id before it is handed on.
//!
//! This crate knows nothing of CRIU, FUSE, NBD or tenants: it stores files and pages (which
//! files to page is the caller's choice; the `criu-image` crate has CRIU's rule).

pub mod accounting;
mod blocking;
pub mod catalog;
pub mod clock;
pub mod codec;
pub mod cold;
pub mod config;
pub mod derive;
mod error;
mod files;
pub mod format;
pub mod frame;
pub mod gc;
pub mod hot;
pub mod index_cache;
pub mod ingest;
mod kept_manifests;
pub mod local;
pub mod locality;
pub mod lock;
pub mod manifest;
pub mod manifest_cache;
pub mod meta;
pub mod pack;
pub mod page;
pub mod peer;
pub mod prefetch;
pub mod progress;
pub mod read;
pub mod recompress;
mod rerun;
pub mod resident;
pub mod stats;
pub mod store;
pub mod tally;
#[cfg(test)]
mod test_store;
pub mod tier;
pub mod usage;
pub mod verify;
pub mod whole_image;

pub use config::StoreConfig;
pub use error::{Error, Result};
pub use manifest::{CheckpointId, CheckpointRef, FileContent, FileEntry, Manifest};
pub use page::{PageId, PageSpan, PAGE_SIZE};
pub use stats::StoreStats;
pub use store::PageStore;
pub use tier::Tier;
