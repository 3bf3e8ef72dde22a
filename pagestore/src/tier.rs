//! The names of the tiers a page can be read from.
//!
//! A low module of its own because the lowest layers name a tier too: a corrupt page's error
//! ([`crate::Error::CorruptPage`]) and the page decoder ([`crate::codec::decode_verified`]) say
//! which tier the bad bytes came from, and neither may depend on the store that walks the tiers.

use std::fmt;

/// The tiers a page can be read from, fastest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Memory,
    Local,
    /// Another worker's local tier ([`crate::peer`]).
    Peer,
    Cold,
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tier::Memory => "memory",
            Tier::Local => "local",
            Tier::Peer => "peer",
            Tier::Cold => "cold",
        })
    }
}
