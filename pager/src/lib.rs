//! Front ends onto the page store.
//!
//! - [`imagefs`]: a read-only FUSE filesystem that serves one checkpoint as a CRIU image directory,
//!   fetching each page from the store only when it is read, and recording which pages were read
//!   ([`access`]) — the raw material of the ActiveSet.
//! - [`nbd`]: an NBD server exporting each stored page file as a block device (read-only, or with
//!   a copy-on-write overlay that commits new generations).
//!
//! The pager is a client of `pagestore`, never the other way round.

pub mod access;
pub mod activeset;
mod error;
pub mod imagefs;
pub mod nbd;
pub mod pagemap;
pub mod protowire;
pub mod reads;
pub mod restore_set;

pub use error::{Error, Result};
pub use imagefs::ImageMount;
