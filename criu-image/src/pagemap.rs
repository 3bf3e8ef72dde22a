//! CRIU pagemap images: which process addresses the pages of `pages-N.img` belong to, and which
//! of them CRIU may restore lazily.
//!
//! `pagemap-PID.img` is two u32 magics, then `[u32 len][protobuf]` records: a `pagemap_head`
//! (`pages_id` = N of `pages-N.img`), then `pagemap_entry`s (`vaddr`=1, `compat_nr_pages`=2,
//! `in_parent`=3, `flags`=4, `nr_pages`=5; see CRIU's images/pagemap.proto, MIT). `pages-N.img`
//! holds the pages of every `PE_PRESENT` entry, in entry order. A small hand codec is enough.
//!
//! The pager rewrites pagemaps to install a tenant's ActiveSet eagerly: CRIU restores entries
//! without `PE_LAZY` in bulk before the tenant runs, and leaves the rest to page faults.

use std::collections::HashSet;

use pagestore::PAGE_SIZE;

use crate::error::{Error, Result};
use crate::protowire::{put_uint, Fields, Value};

pub const IMG_COMMON_MAGIC: u32 = 0x5456_4319;
pub const PAGEMAP_MAGIC: u32 = 0x5608_4025;
pub const PE_PARENT: u32 = 1;
pub const PE_LAZY: u32 = 2;
pub const PE_PRESENT: u32 = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PagemapEntry {
    pub vaddr: u64,
    pub nr_pages: u32,
    pub flags: u32,
    pub in_parent: Option<bool>,
}

impl PagemapEntry {
    pub fn is_present(&self) -> bool {
        self.flags & PE_PRESENT != 0
    }
    pub fn is_lazy(&self) -> bool {
        self.flags & PE_LAZY != 0
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pagemap {
    pub pages_id: u32,
    pub entries: Vec<PagemapEntry>,
}

/// Where one page of `pages-N.img` belongs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PagePosition {
    pub vaddr: u64,
    pub lazy: bool,
}

impl Pagemap {
    pub fn decode(bytes: &[u8]) -> Result<Pagemap> {
        if bytes.len() < 8 {
            return Err(Error::PagemapTruncatedMagic);
        }
        let m1 = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let m2 = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        if m1 != IMG_COMMON_MAGIC || m2 != PAGEMAP_MAGIC {
            return Err(Error::NotPagemap(m1, m2));
        }
        let mut records = Records(&bytes[8..]);
        let head = records.next_record()?.ok_or(Error::PagemapNoHead)?;
        let mut pages_id = None;
        for field in varint_fields(head) {
            if let (1, value) = field? {
                pages_id = Some(value as u32);
            }
        }
        let pages_id = pages_id.ok_or(Error::PagemapNoPagesId)?;
        let mut entries = Vec::new();
        while let Some(rec) = records.next_record()? {
            let (mut vaddr, mut compat, mut nr, mut flags, mut in_parent) =
                (None, 0, None, 0, None);
            for field in varint_fields(rec) {
                let (field, value) = field?;
                match field {
                    1 => vaddr = Some(value),
                    2 => compat = value as u32,
                    3 => in_parent = Some(value != 0),
                    4 => flags = value as u32,
                    5 => nr = Some(value as u32),
                    _ => {}
                }
            }
            entries.push(PagemapEntry {
                vaddr: vaddr.ok_or(Error::PagemapEntryNoVaddr)?,
                nr_pages: nr.unwrap_or(compat),
                flags,
                in_parent,
            });
        }
        Ok(Pagemap { pages_id, entries })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&IMG_COMMON_MAGIC.to_le_bytes());
        out.extend_from_slice(&PAGEMAP_MAGIC.to_le_bytes());
        let mut head = Vec::new();
        put_uint(&mut head, 1, u64::from(self.pages_id));
        put_record(&mut out, &head);
        for e in &self.entries {
            let mut rec = Vec::new();
            put_uint(&mut rec, 1, e.vaddr);
            put_uint(&mut rec, 2, 0);
            if let Some(p) = e.in_parent {
                put_uint(&mut rec, 3, u64::from(p));
            }
            put_uint(&mut rec, 4, u64::from(e.flags));
            put_uint(&mut rec, 5, u64::from(e.nr_pages));
            put_record(&mut out, &rec);
        }
        out
    }

    /// The address and laziness of each page of `pages-<pages_id>.img`, by page index.
    pub fn page_positions(&self) -> Vec<PagePosition> {
        let mut out = Vec::new();
        for e in self.entries.iter().filter(|e| e.is_present()) {
            for p in 0..u64::from(e.nr_pages) {
                out.push(PagePosition {
                    vaddr: e.vaddr + p * PAGE_SIZE as u64,
                    lazy: e.is_lazy(),
                });
            }
        }
        out
    }

    /// A copy in which the lazy pages at `eager` addresses are no longer lazy: lazy entries are
    /// split into runs, and runs of eager pages lose `PE_LAZY`. Entry order, and so the order of
    /// pages in `pages-N.img`, is unchanged. Returns the new pagemap and how many pages it made
    /// eager.
    pub fn with_eager<S: std::hash::BuildHasher>(&self, eager: &HashSet<u64, S>) -> (Pagemap, u64) {
        let mut entries = Vec::with_capacity(self.entries.len());
        let mut made_eager = 0;
        for e in &self.entries {
            if !(e.is_lazy() && e.is_present()) {
                entries.push(*e);
                continue;
            }
            let mut run: Option<PagemapEntry> = None;
            for p in 0..e.nr_pages {
                let vaddr = e.vaddr + u64::from(p) * PAGE_SIZE as u64;
                let hot = eager.contains(&vaddr);
                made_eager += u64::from(hot);
                let flags = if hot { e.flags & !PE_LAZY } else { e.flags };
                match &mut run {
                    Some(r) if r.flags == flags => r.nr_pages += 1,
                    _ => {
                        entries.extend(run.take());
                        run = Some(PagemapEntry {
                            vaddr,
                            nr_pages: 1,
                            flags,
                            in_parent: e.in_parent,
                        });
                    }
                }
            }
            entries.extend(run);
        }
        (
            Pagemap {
                pages_id: self.pages_id,
                entries,
            },
            made_eager,
        )
    }
}

fn put_record(out: &mut Vec<u8>, rec: &[u8]) {
    out.extend_from_slice(&(rec.len() as u32).to_le_bytes());
    out.extend_from_slice(rec);
}

struct Records<'a>(&'a [u8]);

impl<'a> Records<'a> {
    fn next_record(&mut self) -> Result<Option<&'a [u8]>> {
        if self.0.is_empty() {
            return Ok(None);
        }
        if self.0.len() < 4 {
            return Err(Error::RecordLengthPastEnd);
        }
        let n = u32::from_le_bytes([self.0[0], self.0[1], self.0[2], self.0[3]]) as usize;
        let rest = &self.0[4..];
        if rest.len() < n {
            return Err(Error::RecordPastEnd { len: n });
        }
        self.0 = &rest[n..];
        Ok(Some(&rest[..n]))
    }
}

/// The fields of one pagemap message: field number and value, varints only (CRIU writes no
/// other wire type there).
fn varint_fields(msg: &[u8]) -> impl Iterator<Item = Result<(u64, u64)>> + '_ {
    let mut fields = Fields::new(msg);
    std::iter::from_fn(move || match fields.next_field() {
        Ok(None) => None,
        Ok(Some((field, Value::Varint(v)))) => Some(Ok((field, v))),
        Ok(Some((field, _))) => Some(Err(Error::PagemapNotVarint(field))),
        Err(e) => Some(Err(e)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Pagemap {
        Pagemap {
            pages_id: 1,
            entries: vec![
                PagemapEntry {
                    vaddr: 0x1000,
                    nr_pages: 2,
                    flags: PE_PRESENT,
                    in_parent: None,
                },
                PagemapEntry {
                    vaddr: 0x10000,
                    nr_pages: 4,
                    flags: PE_PRESENT | PE_LAZY,
                    in_parent: None,
                },
                PagemapEntry {
                    vaddr: 0x80000,
                    nr_pages: 3,
                    flags: 0,
                    in_parent: None,
                },
            ],
        }
    }

    #[test]
    fn round_trip() {
        let p = sample();
        assert_eq!(Pagemap::decode(&p.encode()).unwrap(), p);
    }

    #[test]
    fn positions_follow_present_entries() {
        let pos = sample().page_positions();
        assert_eq!(pos.len(), 6);
        assert_eq!(
            pos[1],
            PagePosition {
                vaddr: 0x2000,
                lazy: false
            }
        );
        assert_eq!(
            pos[3],
            PagePosition {
                vaddr: 0x11000,
                lazy: true
            }
        );
    }

    #[test]
    fn eager_pages_split_lazy_entries_and_keep_page_order() {
        let p = sample();
        let eager: HashSet<u64> = [0x11000, 0x12000, 0x1000].into();
        let (q, n) = p.with_eager(&eager);
        assert_eq!(n, 2, "non-lazy pages are not counted");
        let flags: Vec<(u64, u32, u32)> = q
            .entries
            .iter()
            .map(|e| (e.vaddr, e.nr_pages, e.flags))
            .collect();
        assert_eq!(
            flags,
            vec![
                (0x1000, 2, PE_PRESENT),
                (0x10000, 1, PE_PRESENT | PE_LAZY),
                (0x11000, 2, PE_PRESENT),
                (0x13000, 1, PE_PRESENT | PE_LAZY),
                (0x80000, 3, 0),
            ]
        );
        let before: Vec<u64> = p.page_positions().iter().map(|x| x.vaddr).collect();
        let after: Vec<u64> = q.page_positions().iter().map(|x| x.vaddr).collect();
        assert_eq!(before, after);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Pagemap::decode(b"").is_err());
        assert!(Pagemap::decode(&[0u8; 8]).is_err());
        let mut b = sample().encode();
        b.truncate(b.len() - 2);
        assert!(Pagemap::decode(&b).is_err());
    }
}
