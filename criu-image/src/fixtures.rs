//! Small images for tests of the code that reads them (this crate's, the pager's ActiveSet, the
//! worker's lent sets): compiled for this crate's own tests, and for others' with the `fixtures`
//! feature, which only dev-dependencies turn on.

use crate::address_space::{Vma, MM_MAGIC};
use crate::pagemap::{Pagemap, PagemapEntry, IMG_COMMON_MAGIC, PE_LAZY, PE_PRESENT};
use crate::protowire::{put_bytes, put_uint};

/// One eager page at 0x1000, then six lazy pages from 0x10000, all in `pages-1.img`.
pub fn one_eager_six_lazy_pagemap() -> Pagemap {
    Pagemap {
        pages_id: 1,
        entries: vec![
            PagemapEntry {
                vaddr: 0x1000,
                nr_pages: 1,
                flags: PE_PRESENT,
                in_parent: None,
            },
            PagemapEntry {
                vaddr: 0x10000,
                nr_pages: 6,
                flags: PE_PRESENT | PE_LAZY,
                in_parent: None,
            },
        ],
    }
}

/// `mm-PID.img` holding `vmas`, as CRIU writes it.
pub fn mm_image(vmas: &[Vma]) -> Vec<u8> {
    let mut entry = Vec::new();
    put_uint(&mut entry, 1, 0x1000); // mm_start_code: not read
    for v in vmas {
        let mut m = Vec::new();
        for (field, value) in [
            (1, v.start),
            (2, v.end),
            (3, v.pgoff),
            (4, v.shmid),
            (5, u64::from(v.prot)),
            (6, u64::from(v.flags)),
            (7, u64::from(v.status)),
        ] {
            put_uint(&mut m, field, value);
        }
        put_bytes(&mut entry, 14, &m);
    }
    let mut out = Vec::new();
    out.extend_from_slice(&IMG_COMMON_MAGIC.to_le_bytes());
    out.extend_from_slice(&MM_MAGIC.to_le_bytes());
    out.extend_from_slice(&(entry.len() as u32).to_le_bytes());
    out.extend_from_slice(&entry);
    out
}

/// A private anonymous mapping, read-write, from `start` to `end`.
pub fn anon_vma(start: u64, end: u64) -> Vma {
    Vma {
        start,
        end,
        pgoff: 0,
        shmid: 0,
        prot: 3,
        flags: 0x22,   // MAP_PRIVATE | MAP_ANONYMOUS
        status: 0x201, // VMA_AREA_REGULAR | VMA_ANON_PRIVATE
    }
}
