//! Pages and their names: a page is 4096 bytes, named by the BLAKE3-256 hash of its bytes.

use std::fmt;

/// Size of a page, the unit of dedup, in bytes.
pub const PAGE_SIZE: usize = 4096;

/// The name of a page: BLAKE3-256 of its 4096 bytes.
///
/// [`PageId::ZERO`] (all-zero bytes, which no BLAKE3 output is in practice) stands for the all-zero
/// page in manifests; that page is never stored.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PageId(pub [u8; 32]);

impl PageId {
    pub const ZERO: PageId = PageId([0; 32]);

    /// Names a full page. Callers pass exactly [`PAGE_SIZE`] bytes.
    pub fn of(page: &[u8]) -> PageId {
        debug_assert_eq!(page.len(), PAGE_SIZE);
        if is_zero(page) {
            PageId::ZERO
        } else {
            PageId(*blake3::hash(page).as_bytes())
        }
    }

    pub fn is_zero(&self) -> bool {
        *self == PageId::ZERO
    }

    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    pub fn from_hex(s: &str) -> Option<PageId> {
        if s.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
            let hex = std::str::from_utf8(chunk).ok()?;
            out[i] = u8::from_str_radix(hex, 16).ok()?;
        }
        Some(PageId(out))
    }

    /// Checks that `page` really is the page named by `self`.
    pub fn matches(&self, page: &[u8]) -> bool {
        page.len() == PAGE_SIZE && PageId::of(page) == *self
    }
}

impl fmt::Display for PageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // 16 hex digits name a page unambiguously in any log a person reads.
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for PageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PageId({self})")
    }
}

/// A map keyed by page id. Page ids are already uniform hashes, so the map's own hash need only
/// be fast (foldhash, seeded per map) rather than SipHash: the catalog and ingest look up every
/// page of every checkpoint.
pub type PageMap<V> = std::collections::HashMap<PageId, V, foldhash::fast::RandomState>;

/// A set of page ids, hashed like [`PageMap`].
pub type PageSet = std::collections::HashSet<PageId, foldhash::fast::RandomState>;

/// True when every byte of `buf` is zero. OR-folding 64-byte chunks lets the compiler vectorise.
pub fn is_zero(buf: &[u8]) -> bool {
    let mut chunks = buf.chunks_exact(64);
    let body_zero = chunks
        .by_ref()
        .all(|c| c.iter().fold(0u8, |acc, &b| acc | b) == 0);
    body_zero && chunks.remainder().iter().all(|&b| b == 0)
}

/// Number of pages needed to hold `len` bytes (the last one zero-padded).
pub fn page_count(len: u64) -> u64 {
    len.div_ceil(PAGE_SIZE as u64)
}

/// Names the pages of `data` into `ids` (one per page, a short last page zero-padded before
/// hashing). One core's share: BLAKE3 of a 4 KiB page is ~2 µs, so ingest spreads pages over
/// cores and each names its own run.
pub fn name_into(data: &[u8], ids: &mut [PageId]) {
    debug_assert_eq!(ids.len() as u64, page_count(data.len() as u64));
    for (i, id) in ids.iter_mut().enumerate() {
        *id = PageId::of(&page_at(data, i));
    }
}

/// The `index`-th page of `data`, zero-padded to a full page.
pub fn page_at(data: &[u8], index: usize) -> std::borrow::Cow<'_, [u8]> {
    let start = index * PAGE_SIZE;
    let end = (start + PAGE_SIZE).min(data.len());
    if end - start == PAGE_SIZE {
        std::borrow::Cow::Borrowed(&data[start..end])
    } else {
        let mut page = vec![0u8; PAGE_SIZE];
        page[..end - start].copy_from_slice(&data[start..end]);
        std::borrow::Cow::Owned(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn name_pages(data: &[u8]) -> Vec<PageId> {
        let mut ids = vec![PageId::ZERO; page_count(data.len() as u64) as usize];
        name_into(data, &mut ids);
        ids
    }

    #[test]
    fn zero_page_is_named_zero_and_detected() {
        let z = vec![0u8; PAGE_SIZE];
        assert!(is_zero(&z));
        assert!(PageId::of(&z).is_zero());
        let mut nz = z.clone();
        nz[4095] = 1;
        assert!(!is_zero(&nz));
        assert!(!PageId::of(&nz).is_zero());
    }

    #[test]
    fn hex_round_trip() {
        let id = PageId::of(&[7u8; PAGE_SIZE]);
        assert_eq!(PageId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(PageId::from_hex("zz"), None);
    }

    #[test]
    fn split_pads_the_last_page() {
        let mut data = vec![1u8; PAGE_SIZE + 10];
        data[PAGE_SIZE..].fill(2);
        let ids = name_pages(&data);
        assert_eq!(ids.len(), 2);
        let mut last = vec![0u8; PAGE_SIZE];
        last[..10].fill(2);
        assert_eq!(ids[1], PageId::of(&last));
        assert!(name_pages(&[]).is_empty());
    }

    proptest! {
        #[test]
        fn is_zero_agrees_with_naive(bytes in proptest::collection::vec(0u8..3, 0..200)) {
            prop_assert_eq!(is_zero(&bytes), bytes.iter().all(|&b| b == 0));
        }

        #[test]
        fn split_names_each_page_like_naming_it_alone(
            pages in proptest::collection::vec(proptest::collection::vec(0u8..2, PAGE_SIZE), 0..12)
        ) {
            let data: Vec<u8> = pages.concat();
            let ids = name_pages(&data);
            prop_assert_eq!(ids.len(), pages.len());
            for (id, page) in ids.iter().zip(&pages) {
                prop_assert_eq!(*id, PageId::of(page));
                prop_assert_eq!(id.is_zero(), page.iter().all(|&b| b == 0));
            }
        }
    }
}
