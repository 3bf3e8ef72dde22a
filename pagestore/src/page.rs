//! Pages and their names: a page is 4096 bytes, named by the BLAKE3-256 hash of its bytes; and
//! byte ranges of a file cut into the pages they touch ([`PageSpan`]).

use std::fmt;
use std::ops::Range;

use bytes::{Bytes, BytesMut};

/// Size of a page, the unit of dedup, in bytes.
pub const PAGE_SIZE: usize = 4096;

/// The all-zero page, for handing out [`PageId::ZERO`]'s bytes without allocating.
pub static ZERO_PAGE: [u8; PAGE_SIZE] = [0; PAGE_SIZE];

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
        hex(&self.0)
    }

    pub fn from_hex(s: &str) -> Option<PageId> {
        unhex(s)?.try_into().ok().map(PageId)
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

/// A non-empty byte range of a file, cut at page boundaries: the pages it touches, and which
/// bytes of each lie inside it. Every reader of a file range (the store's file reads, the pager's
/// FUSE and NBD front ends) slices it this way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageSpan {
    start: u64,
    end: u64,
}

/// The part of one page inside a [`PageSpan`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageSlice {
    /// Index of the page in the file.
    pub page: u64,
    /// The bytes of the page inside the span.
    pub bytes: Range<usize>,
    /// Where those bytes start in the span (0 for the first page's).
    pub at: usize,
}

impl PageSlice {
    /// Whether the span covers the whole page.
    pub fn is_whole(&self) -> bool {
        self.bytes.len() == PAGE_SIZE
    }
}

impl PageSpan {
    /// Bytes `offset..offset + len`; `None` when `len` is 0.
    pub fn new(offset: u64, len: u64) -> Option<PageSpan> {
        let end = offset.saturating_add(len);
        (end > offset).then_some(PageSpan { start: offset, end })
    }

    /// `len` bytes at `offset` of a file of `size` bytes, cut short at the end of the file;
    /// `None` when nothing of it is left.
    pub fn within(offset: u64, len: u64, size: u64) -> Option<PageSpan> {
        PageSpan::new(offset, len.min(size.saturating_sub(offset)))
    }

    /// Offset of the first byte.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Offset just past the last byte.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Bytes in the span (never 0).
    pub fn size(&self) -> u64 {
        self.end - self.start
    }

    /// Index of the first page the span touches.
    pub fn first_page(&self) -> u64 {
        self.start / PAGE_SIZE as u64
    }

    /// Index of the last page the span touches.
    pub fn last_page(&self) -> u64 {
        (self.end - 1) / PAGE_SIZE as u64
    }

    /// The pages the span touches, as positions in the file's page list.
    pub fn pages(&self) -> Range<usize> {
        self.first_page() as usize..self.last_page() as usize + 1
    }

    /// Each page the span touches, in order, with its bytes inside the span.
    pub fn slices(&self) -> impl Iterator<Item = PageSlice> {
        let (start, end) = (self.start, self.end);
        (self.first_page()..=self.last_page()).map(move |page| {
            let page_start = page * PAGE_SIZE as u64;
            let from = start.max(page_start);
            let to = end.min(page_start + PAGE_SIZE as u64);
            PageSlice {
                page,
                bytes: (from - page_start) as usize..(to - page_start) as usize,
                at: (from - start) as usize,
            }
        })
    }

    /// The span's bytes, given the whole pages it touches in order (one per [`Self::pages`]):
    /// a span inside one page shares that page's buffer; a longer one is copied once.
    pub fn gather(&self, pages: &[Bytes]) -> Bytes {
        debug_assert_eq!(pages.len(), self.pages().len());
        let mut slices = self.slices().zip(pages);
        if pages.len() == 1 {
            if let Some((s, page)) = slices.next() {
                return page.slice(s.bytes);
            }
        }
        let mut out = BytesMut::with_capacity(self.size() as usize);
        for (s, page) in slices {
            out.extend_from_slice(&page[s.bytes]);
        }
        out.freeze()
    }
}

/// `bytes` as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    // One allocation (a `format!` per byte made 32 for a page id: ~1 µs, paid per page of an
    // ActiveSet on a swap-in's path).
    let mut text = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        text.push(char::from(DIGITS[usize::from(b >> 4)]));
        text.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    text
}

/// The bytes of hex `text`, or `None` if it is not hex.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {

    #[test]
    fn hex_reads_back_and_refuses_what_is_not_hex() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(hex(&bytes), "0001abff");
        assert_eq!(unhex("0001abff").unwrap(), bytes);
        assert!(unhex("abc").is_none());
        assert!(unhex("zz").is_none());
    }

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

    fn span_slices(span: PageSpan) -> Vec<(u64, Range<usize>, usize)> {
        span.slices().map(|s| (s.page, s.bytes, s.at)).collect()
    }

    #[test]
    fn a_span_inside_one_page_is_one_slice() {
        let span = PageSpan::new(PAGE_SIZE as u64 + 10, 100).unwrap();
        assert_eq!((span.first_page(), span.last_page()), (1, 1));
        assert_eq!(span.pages(), 1..2);
        assert_eq!(span_slices(span), vec![(1, 10..110, 0)]);
        let whole = PageSpan::new(2 * PAGE_SIZE as u64, PAGE_SIZE as u64).unwrap();
        assert_eq!(span_slices(whole), vec![(2, 0..PAGE_SIZE, 0)]);
        assert!(whole.slices().all(|s| s.is_whole()));
    }

    #[test]
    fn a_span_from_mid_page_to_mid_page_cuts_both_ends() {
        let span = PageSpan::new(100, 2 * PAGE_SIZE as u64).unwrap();
        assert_eq!(span.pages(), 0..3);
        assert_eq!(span.size(), 2 * PAGE_SIZE as u64);
        assert_eq!(
            span_slices(span),
            vec![
                (0, 100..PAGE_SIZE, 0),
                (1, 0..PAGE_SIZE, PAGE_SIZE - 100),
                (2, 0..100, 2 * PAGE_SIZE - 100),
            ]
        );
        let whole: Vec<bool> = span.slices().map(|s| s.is_whole()).collect();
        assert_eq!(whole, [false, true, false]);
    }

    #[test]
    fn a_span_is_cut_short_at_the_end_of_the_file() {
        let size = 2 * PAGE_SIZE as u64 + 5;
        let span = PageSpan::within(PAGE_SIZE as u64, 10 * PAGE_SIZE as u64, size).unwrap();
        assert_eq!((span.start(), span.end()), (PAGE_SIZE as u64, size));
        assert_eq!(
            span_slices(span),
            vec![(1, 0..PAGE_SIZE, 0), (2, 0..5, PAGE_SIZE)]
        );
        assert_eq!(PageSpan::within(size, 1, size), None, "at the end");
        assert_eq!(PageSpan::within(size + 1, 1, size), None, "past the end");
        assert_eq!(PageSpan::new(7, 0), None, "empty");
        assert_eq!(PageSpan::within(0, 0, size), None);
    }

    #[test]
    fn gather_joins_the_span_and_shares_a_single_page() {
        let pages: Vec<Bytes> = (1..=3u8).map(|b| Bytes::from(vec![b; PAGE_SIZE])).collect();
        let span = PageSpan::new(PAGE_SIZE as u64 - 2, PAGE_SIZE as u64 + 4).unwrap();
        let got = span.gather(&pages);
        let mut want = vec![1u8; 2];
        want.extend_from_slice(&[2; PAGE_SIZE]);
        want.extend_from_slice(&[3; 2]);
        assert_eq!(got, want);
        let one = PageSpan::new(PAGE_SIZE as u64 + 8, 16).unwrap();
        let got = one.gather(&pages[1..2]);
        assert_eq!(got, vec![2u8; 16]);
        assert_eq!(
            got.as_ptr(),
            pages[1][8..].as_ptr(),
            "no copy of a single page"
        );
    }

    proptest! {
        #[test]
        fn is_zero_agrees_with_naive(bytes in proptest::collection::vec(0u8..3, 0..200)) {
            prop_assert_eq!(is_zero(&bytes), bytes.iter().all(|&b| b == 0));
        }

        #[test]
        fn span_slices_reassemble_the_range(
            offset in 0u64..5 * PAGE_SIZE as u64,
            len in 0u64..4 * PAGE_SIZE as u64,
            size in 0u64..6 * PAGE_SIZE as u64,
        ) {
            let file: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            match PageSpan::within(offset, len, size) {
                None => prop_assert!(offset >= size || len == 0),
                Some(span) => {
                    let mut got = Vec::new();
                    for s in span.slices() {
                        prop_assert_eq!(s.at, got.len());
                        let page_start = s.page as usize * PAGE_SIZE;
                        got.extend_from_slice(&file[page_start + s.bytes.start..page_start + s.bytes.end]);
                    }
                    let end = (offset + len).min(size) as usize;
                    prop_assert_eq!(&got[..], &file[offset as usize..end]);
                    prop_assert_eq!(span.pages().len(), span.slices().count());
                }
            }
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
