//! The catalog: which pack holds each stored page, and where in it.
//!
//! It is derived state: rebuilt at open from the indexes at the tail of every pack in the cold
//! tier (one ranged read each), and extended as packs are written. So it can never disagree with
//! the cold tier for long, and losing it loses nothing.

use std::collections::hash_map;
use std::sync::RwLock;

use tracing::warn;

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

/// What the catalog keeps of a [`Location`]: its pack as an index into the catalog's table of
/// packs (4 bytes, not the id's 32) and its offset in 40 bits (1 TiB). 16 bytes instead of 48:
/// the catalog holds one per stored page (982,643 on a 1000-tenant host), in a hash map whose
/// empty buckets have the same size, and it lives in the worker's memory, which counts against
/// every idle tenant.
#[derive(Clone, Copy)]
struct Entry {
    pack: u32,
    offset_low: u32,
    len: u32,
    offset_high: u8,
    codec: Codec,
    slot: Slot,
}

/// The largest offset an [`Entry`] holds.
const MAX_OFFSET: u64 = (1 << 40) - 1;

impl Entry {
    /// `e` in pack `pack` (index `index`); `None` for an offset past 1 TiB: packs are written in
    /// megabytes and their indexes are checked against their size, so no real pack has one; its
    /// page is left out (missing, never misplaced).
    fn of(pack: &PackId, index: u32, e: &PackEntry) -> Option<Entry> {
        if e.offset > MAX_OFFSET {
            warn!(pack = %pack.to_hex(), offset = e.offset, "a pack entry past 1 TiB is left out");
            return None;
        }
        Some(Entry {
            pack: index,
            offset_low: e.offset as u32,
            len: e.len,
            offset_high: (e.offset >> 32) as u8,
            codec: e.codec,
            slot: e.slot,
        })
    }
}

#[derive(Default)]
struct Pages {
    entries: PageMap<Entry>,
    /// Every pack an entry has named, by its index (indexes are never reused).
    packs: Vec<PackId>,
    index_of: std::collections::HashMap<PackId, u32>,
}

impl Pages {
    fn intern(&mut self, pack: PackId) -> u32 {
        if let Some(&i) = self.index_of.get(&pack) {
            return i;
        }
        let i = u32::try_from(self.packs.len()).expect("fewer than 2^32 packs in one process");
        self.packs.push(pack);
        self.index_of.insert(pack, i);
        i
    }

    fn location(&self, e: &Entry) -> Location {
        Location {
            pack: self.packs[e.pack as usize],
            offset: (u64::from(e.offset_high) << 32) | u64::from(e.offset_low),
            len: e.len,
            codec: e.codec,
            slot: e.slot,
        }
    }
}

#[derive(Default)]
pub struct Catalog {
    pages: RwLock<Pages>,
}

impl Catalog {
    pub fn locate(&self, id: &PageId) -> Option<Location> {
        let pages = self.read();
        pages.entries.get(id).map(|e| pages.location(e))
    }

    pub fn contains(&self, id: &PageId) -> bool {
        self.read().entries.contains_key(id)
    }

    /// Records a pack's pages. A page already known keeps its first location.
    pub fn add_pack(&self, pack: PackId, entries: &[PackEntry]) {
        let mut pages = self.write();
        let index = pages.intern(pack);
        for e in entries {
            if let hash_map::Entry::Vacant(slot) = pages.entries.entry(e.id) {
                if let Some(entry) = Entry::of(&pack, index, e) {
                    slot.insert(entry);
                }
            }
        }
    }

    /// Points the pages of a new pack (written by gc's repack) at it, replacing older locations.
    pub fn move_to_pack(&self, pack: PackId, entries: &[PackEntry]) {
        let mut pages = self.write();
        let index = pages.intern(pack);
        for e in entries {
            if let Some(entry) = Entry::of(&pack, index, e) {
                pages.entries.insert(e.id, entry);
            }
        }
    }

    /// Forgets every page located in one of `packs` (they were deleted).
    pub fn remove_packs(&self, packs: &std::collections::HashSet<PackId>) {
        let mut pages = self.write();
        let gone: std::collections::HashSet<u32> = packs
            .iter()
            .filter_map(|p| pages.index_of.remove(p))
            .collect();
        if !gone.is_empty() {
            pages.entries.retain(|_, e| !gone.contains(&e.pack));
        }
    }

    /// Whether the pages `ids` take at most `limit` bytes in their packs (what fetching them
    /// from the cold tier reads); a page not in the catalog counts as a whole page. Stops
    /// counting past `limit`.
    pub fn stored_within(&self, ids: &[PageId], limit: u64) -> bool {
        let pages = self.read();
        let mut total = 0u64;
        for id in ids {
            total += pages
                .entries
                .get(id)
                .map_or(crate::page::PAGE_SIZE as u64, |e| {
                    pages.location(e).stored_bytes()
                });
            if total > limit {
                return false;
            }
        }
        true
    }

    pub fn len(&self) -> usize {
        self.read().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Pages> {
        self.pages.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Pages> {
        self.pages.write().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u8, offset: u64) -> PackEntry {
        PackEntry {
            id: PageId([id; 32]),
            offset,
            len: 1000 + u32::from(id),
            codec: Codec::Lz4,
            slot: Slot::ALONE,
        }
    }

    #[test]
    fn an_entry_takes_16_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 16);
    }

    #[test]
    fn locations_come_back_as_added_and_the_first_pack_keeps_a_page() {
        let catalog = Catalog::default();
        let (a, b) = (PackId([1; 32]), PackId([2; 32]));
        let far = MAX_OFFSET - 7;
        catalog.add_pack(a, &[entry(1, 0), entry(2, far)]);
        catalog.add_pack(b, &[entry(2, 64), entry(3, 4096)]);
        let at = |id: u8| catalog.locate(&PageId([id; 32])).unwrap();
        assert_eq!((at(1).pack, at(1).offset, at(1).len), (a, 0, 1001));
        assert_eq!(
            (at(2).pack, at(2).offset),
            (a, far),
            "kept its first location"
        );
        assert_eq!(
            (at(3).pack, at(3).offset, at(3).codec),
            (b, 4096, Codec::Lz4)
        );
        assert_eq!(catalog.len(), 3);

        catalog.move_to_pack(b, &[entry(2, 128)]);
        assert_eq!((at(2).pack, at(2).offset), (b, 128));

        catalog.remove_packs(&[a].into_iter().collect());
        assert!(catalog.locate(&PageId([1; 32])).is_none());
        assert_eq!((at(2).pack, at(3).pack), (b, b));
        // A pack named again after its removal gets an index of its own.
        catalog.add_pack(a, &[entry(1, 8)]);
        assert_eq!((at(1).pack, at(1).offset), (a, 8));
        assert_eq!(catalog.len(), 3);
    }

    #[test]
    fn stored_bytes_are_counted_up_to_a_limit() {
        let catalog = Catalog::default();
        catalog.add_pack(PackId([1; 32]), &[entry(1, 0), entry(2, 2000)]);
        let ids = [PageId([1; 32]), PageId([2; 32])];
        // 1001 + 1002 bytes stored.
        assert!(catalog.stored_within(&ids, 2003));
        assert!(!catalog.stored_within(&ids, 2002));
        // An unknown page counts as a whole page.
        assert!(!catalog.stored_within(&[PageId([9; 32])], 4095));
        assert!(catalog.stored_within(&[], 0));
    }

    #[test]
    fn an_entry_past_1_tib_is_left_out() {
        let catalog = Catalog::default();
        catalog.add_pack(PackId([1; 32]), &[entry(1, MAX_OFFSET + 1), entry(2, 0)]);
        assert!(catalog.locate(&PageId([1; 32])).is_none());
        assert!(catalog.contains(&PageId([2; 32])));
    }
}
