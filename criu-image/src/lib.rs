//! CRIU's image formats: what picocenter knows about the files of a CRIU image directory, in
//! one place.
//!
//! - [`names`]: which files are which (`pages-N.img`, `pagemap-PID.img`), and
//!   [`PAGED_FILES`], the rule by which an ingest of an image directory splits CRIU's page files
//!   into pages (the page store itself knows no formats).
//! - [`pagemap`]: pagemap images decoded and rewritten (page index ↔ virtual address and
//!   laziness; clearing `PE_LAZY` on chosen pages).
//! - [`protowire`]: the protobuf wire codec of the pagemaps and of CRIU's RPC messages.
//! - [`address_space`]: processes' mappings (`mm-PID.img`), and page addresses relative to them,
//!   which find the same data in another process of the program that ASLR laid out elsewhere.
//! - [`layout`]: an image's layout (each page file's pagemap and page positions), from a stored
//!   checkpoint's manifest or from a dump on disk.
//! - [`restore_set`]: the pages a restore reads first, computed from a dump not yet ingested.
//!
//! Decoding is pure (no I/O); only the `of_dir` constructors read a directory (`files.rs`). Formats follow
//! CRIU 4.2's sources, cited in each module. The crate depends on `pagestore` for its plain
//! types only (a manifest and its page ids, a locality position, the ingest's paging rule).

pub mod address_space;
mod error;
mod files;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
pub mod layout;
pub mod names;
pub mod pagemap;
pub mod protowire;
pub mod restore_set;

pub use address_space::ImageSpaces;
pub use error::{Error, Result};
pub use layout::ImageLayout;
pub use names::{ingest_options, PAGED_FILES};
