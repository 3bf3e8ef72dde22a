//! The catalog: which pack holds each stored page, and where in it.
//!
//! It is derived state: rebuilt at open from the indexes at the tail of every pack in the cold
//! tier (one ranged read each), and extended as packs are written. So it can never disagree with
//! the cold tier for long, and losing it loses nothing.

use std::sync::RwLock;

use crate::codec::{Codec, Slot};
use crate::pack::{PackEntry, PackId};
use crate::page::{PageId, PageMap};

/// Where one stored page lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    pub pack: PackId,
    pub offset: u64,
    pub len: u32,
    pub codec: Codec,
    /// Which page of its frame (pages encoded alone: [`Slot::ALONE`]).
    pub slot: Slot,
}

impl Location {
    /// This page's share of the pack's bytes (a frame's length is shared by its pages).
    pub fn stored_bytes(&self) -> u64 {
        self.slot.share_of(self.len)
    }
}

#[derive(Default)]
pub struct Catalog {
    pages: RwLock<PageMap<Location>>,
}

impl Catalog {
    pub fn locate(&self, id: &PageId) -> Option<Location> {
        self.read().get(id).copied()
    }

    pub fn contains(&self, id: &PageId) -> bool {
        self.read().contains_key(id)
    }

    /// Records a pack's pages. A page already known keeps its first location.
    pub fn add_pack(&self, pack: PackId, entries: &[PackEntry]) {
        let mut map = self.pages.write().unwrap_or_else(|p| p.into_inner());
        for e in entries {
            map.entry(e.id).or_insert(Location {
                pack,
                offset: e.offset,
                len: e.len,
                codec: e.codec,
                slot: e.slot,
            });
        }
    }

    /// Points the pages of a new pack (written by gc's repack) at it, replacing older locations.
    pub fn move_to_pack(&self, pack: PackId, entries: &[PackEntry]) {
        let mut map = self.pages.write().unwrap_or_else(|p| p.into_inner());
        for e in entries {
            map.insert(
                e.id,
                Location {
                    pack,
                    offset: e.offset,
                    len: e.len,
                    codec: e.codec,
                    slot: e.slot,
                },
            );
        }
    }

    /// Forgets every page located in one of `packs` (they were deleted).
    pub fn remove_packs(&self, packs: &std::collections::HashSet<PackId>) {
        let mut map = self.pages.write().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, loc| !packs.contains(&loc.pack));
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, PageMap<Location>> {
        self.pages.read().unwrap_or_else(|p| p.into_inner())
    }
}
