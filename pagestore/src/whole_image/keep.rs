//! Writing a kept image (see the module doc of [`super`]): its header, each non-zero page from the
//! memory tier, the checkpoint's dump or the local tier, and the footer of its parts.

use std::io::Write;
use std::path::Path;

use super::{HEADER, MAGIC, PAGE_HEADER, PART};
use crate::codec::{self, Codec};
use crate::manifest::{FileContent, Manifest};
use crate::page::PAGE_SIZE;
use crate::store::PageStore;

/// The kept file is written through a buffer of 64 KiB: buffers of a whole image (3.4 MiB for
/// the counter) were allocated afresh by each restore, in memory this VM's hypervisor may have
/// taken back (~17-20 µs a page to touch again; bench/results/density/burst-41d32d8).
const CHUNK: usize = 16;
/// The most an encoded page takes (lz4's bound for 4 KiB).
const MAX_ENCODED: usize = PAGE_SIZE + PAGE_SIZE / 255 + 16;

impl PageStore {
    /// Writes the kept image of `manifest` at `path` (see [`Self::keep_whole_image`]); `false` at
    /// the first page on none of the sources.
    pub(super) fn write_whole_image(
        &self,
        manifest: &Manifest,
        dump: Option<&Path>,
        path: &Path,
    ) -> std::io::Result<bool> {
        let mut out =
            std::io::BufWriter::with_capacity(CHUNK * PAGE_SIZE, std::fs::File::create(path)?);
        out.write_all(MAGIC)?;
        out.write_all(&manifest.generation.to_le_bytes())?;
        out.write_all(&manifest.created_ms.to_le_bytes())?;
        out.write_all(&(manifest.non_zero_pages().count() as u32).to_le_bytes())?;
        let mut encoded = Vec::with_capacity(MAX_ENCODED);
        let mut dumped = vec![0u8; PAGE_SIZE];
        // Where each part starts, for the footer.
        let (mut at, mut kept, mut footer) = (HEADER as u64, 0usize, Vec::new());
        for file in &manifest.files {
            let FileContent::Paged(pages) = &file.content else {
                continue;
            };
            // A file the dump lacks (or no dump) leaves the tiers.
            let dump_file = dump.and_then(|d| std::fs::File::open(d.join(&file.name)).ok());
            for (index, id) in pages.iter().enumerate().filter(|(_, id)| !id.is_zero()) {
                encoded.clear();
                let codec = if let Some(page) = self.hot().peek(id) {
                    codec::encode_into(&page, &mut encoded)
                } else if dump_file.as_ref().is_some_and(|f| {
                    read_dumped_page(f, index, &mut dumped).is_ok() && id.matches(&dumped)
                }) {
                    codec::encode_into(&dumped, &mut encoded)
                } else {
                    // Encoded as the local tier holds it: checked when read back.
                    match self.local().map(|l| l.get(id)) {
                        Some(Ok(Some((codec @ (Codec::Raw | Codec::Lz4), data)))) => {
                            encoded.extend_from_slice(&data);
                            codec
                        }
                        _ => return Ok(false),
                    }
                };
                if kept % PART == 0 {
                    footer.extend_from_slice(&at.to_le_bytes());
                }
                out.write_all(&[codec as u8])?;
                out.write_all(&(encoded.len() as u32).to_le_bytes())?;
                out.write_all(&encoded)?;
                at += (PAGE_HEADER + encoded.len()) as u64;
                kept += 1;
            }
        }
        out.write_all(&footer)?;
        out.flush()?;
        Ok(true)
    }
}

/// Reads page `index` of a dumped page file into `page` (4 KiB; a short last page ends in
/// zeros, as ingest names it).
fn read_dumped_page(file: &std::fs::File, index: usize, page: &mut [u8]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let offset = (index * PAGE_SIZE) as u64;
    let mut filled = 0;
    while filled < page.len() {
        match file.read_at(&mut page[filled..], offset + filled as u64)? {
            0 => break,
            n => filled += n,
        }
    }
    if filled == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    page[filled..].fill(0);
    Ok(())
}
