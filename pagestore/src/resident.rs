//! What this worker already holds of a list of pages (the memory and local tiers), found and
//! served without touching the cold tier.
//!
//! Two callers need an answer that never waits on the network: the pager's FUSE thread, which
//! answers a read whose pages are all in memory on the spot instead of handing it to the async
//! runtime (a restore makes hundreds of small reads, each of which otherwise pays a task hop),
//! and the worker deciding whether a checkpoint can be restored whole from this machine.

use crate::manifest::{FileContent, FileEntry};
use crate::page::{PageId, PAGE_SIZE};
use crate::store::PageStore;
use crate::tally::TierTally;

impl PageStore {
    /// `len` bytes at `offset` of `file` (short at the end of the file) if the file is inline or
    /// every page of the range is in the memory tier (or zero); `None` otherwise, having read
    /// nothing from other tiers.
    pub fn read_file_at_memory(
        &self,
        file: &FileEntry,
        offset: u64,
        len: usize,
        tally: Option<&TierTally>,
    ) -> Option<Vec<u8>> {
        let end = (offset + len as u64).min(file.size);
        if offset >= end {
            return Some(Vec::new());
        }
        let pages = match &file.content {
            FileContent::Inline(data) => {
                return data.get(offset as usize..end as usize).map(<[u8]>::to_vec)
            }
            FileContent::Paged(pages) => pages,
        };
        let first = (offset / PAGE_SIZE as u64) as usize;
        let last = ((end - 1) / PAGE_SIZE as u64) as usize;
        let ids = pages.get(first..=last)?;
        let mut out = Vec::with_capacity((end - offset) as usize);
        let mut hits = 0;
        for (i, id) in ids.iter().enumerate() {
            let page_start = (first + i) as u64 * PAGE_SIZE as u64;
            let from = (offset.max(page_start) - page_start) as usize;
            let to = (end.min(page_start + PAGE_SIZE as u64) - page_start) as usize;
            if id.is_zero() {
                out.resize(out.len() + (to - from), 0);
            } else {
                let page = self.hot().get(id)?;
                out.extend_from_slice(&page[from..to]);
                hits += 1;
            }
        }
        if let Some(t) = tally {
            (0..hits).for_each(|_| t.add_memory());
        }
        Some(out)
    }

    /// Brings `ids` into the memory tier from the local tier where they are not there yet, never
    /// reading the cold tier; `false` at the first page neither tier holds (the rest are not
    /// looked at). Blocking (local-tier reads): call it off the async runtime.
    pub fn promote_resident(&self, ids: &[PageId]) -> bool {
        ids.iter().all(|id| {
            id.is_zero()
                || self.hot().contains(id)
                || match self.read_local(id) {
                    Some(page) => {
                        self.hot().insert(*id, &page);
                        true
                    }
                    None => false,
                }
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::StoreConfig;
    use crate::manifest::{FileContent, FileEntry};
    use crate::page::{PageId, PAGE_SIZE};
    use crate::store::PageStore;

    fn page(byte: u8) -> Vec<u8> {
        vec![byte; PAGE_SIZE]
    }

    #[tokio::test]
    async fn memory_reads_answer_only_when_every_page_is_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let store = PageStore::open(&StoreConfig::embedded(dir.path()))
            .await
            .unwrap();
        let (a, b) = (page(1), page(2));
        let (ida, idb) = (PageId::of(&a), PageId::of(&b));
        let file = FileEntry {
            name: "pages-1.img".into(),
            mode: 0o600,
            size: 3 * PAGE_SIZE as u64,
            content: FileContent::Paged(vec![ida, PageId::ZERO, idb]),
        };
        store.hot().insert(ida, &a);
        let tally = crate::tally::TierTally::default();
        // Page 0 and the zero page are answered; page 2 is not in memory.
        let got = store
            .read_file_at_memory(&file, 100, PAGE_SIZE + 10, Some(&tally))
            .unwrap();
        assert_eq!(&got[..PAGE_SIZE - 100], &a[100..]);
        assert!(got[PAGE_SIZE - 100..].iter().all(|&x| x == 0));
        assert_eq!(tally.counts().memory_bytes, PAGE_SIZE as u64);
        assert!(store
            .read_file_at_memory(&file, 0, 3 * PAGE_SIZE, None)
            .is_none());
        // Nothing holds page b: promoting reports it missing and reads no cold tier.
        assert!(!store.promote_resident(&[ida, PageId::ZERO, idb]));
        // Once the local tier has it, promoting brings it into memory.
        let (codec, encoded) = crate::codec::encode(&b);
        store.local().unwrap().put(&idb, codec, &encoded).unwrap();
        assert!(store.promote_resident(&[ida, idb]));
        assert!(store.hot().contains(&idb));
        let all = store
            .read_file_at_memory(&file, 0, 4 * PAGE_SIZE, None)
            .unwrap();
        assert_eq!(all.len(), 3 * PAGE_SIZE, "short at the end of the file");
        assert_eq!(&all[2 * PAGE_SIZE..], &b[..]);
    }
}
