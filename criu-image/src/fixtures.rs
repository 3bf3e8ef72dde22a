//! A small pagemap for tests of the code that reads images (this crate's, and the pager's
//! ActiveSet): compiled for this crate's own tests, and for others' with the `fixtures` feature,
//! which only dev-dependencies turn on.

use crate::pagemap::{Pagemap, PagemapEntry, PE_LAZY, PE_PRESENT};

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
