//! Manifests built by hand, for unit tests of the code that reads them (restore plans, whole
//! restores, staging): see `pagestore::manifest::testing`.

pub use pagestore::manifest::testing::{file, of_files};
