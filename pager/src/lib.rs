//! Front ends onto the page store.
//!
//! - [`imagefs`]: a read-only FUSE filesystem that serves one checkpoint's files as a directory,
//!   fetching each page from the store only when it is read, and recording which pages were read
//!   ([`access`]) — the raw material of the ActiveSet.
//! - [`nbd`]: an NBD server exporting each stored paged file as a block device (read-only, or
//!   with a copy-on-write overlay that commits new generations).
//! - [`activeset`]: the ActiveSet, learned from the access log of a CRIU restore and applied to
//!   the next one; it reads CRIU's images through the `criu-image` crate. The two front ends
//!   know no image format: they serve a manifest's files, paged or inline.
//!
//! The pager is a client of `pagestore`, never the other way round.

pub mod access;
pub mod activeset;
mod error;
pub mod imagefs;
pub mod nbd;
mod readahead;
pub mod reads;
pub mod tls;

pub use error::{Error, Result};
pub use imagefs::{ImageMount, MountOptions};
