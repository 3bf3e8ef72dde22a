//! Dense frames: a few neighbouring pages compressed together with zstd, the encoding of the
//! cold tier's pages once gc has recompressed their pack.
//!
//! Why frames and why this size (measured on real checkpoints; the table is in
//! docs/store-format.md#dense-cold-packs): cold bytes are what an operator pays for month after
//! month, and per-page lz4 keeps about twice what zstd over a few neighbouring pages keeps, while
//! a frame of [`FRAME_PAGES`] pages is still one small ranged GET (at most 16 KiB and a few bytes)
//! and decodes in well under the ~20 us a page may cost. Ingest stays on lz4 (zstd at these levels
//! is several times slower than lz4, and swap-out speed rules there); gc recompresses
//! ([`crate::gc`]), so the memory and local tiers never see a frame: a page read from a frame is
//! handed on decoded and cached locally in lz4.

use std::cell::RefCell;

use crate::page::PAGE_SIZE;

/// Pages per frame. 4 pages (16 KiB) decode in ~10 us here; 8 and 16 pages save a few percent
/// more but cost 2-4x that per page read alone (docs/store-format.md#dense-cold-packs).
pub const FRAME_PAGES: usize = 4;

/// The zstd level gc recompresses at: it runs off the swap-out path, so it can afford more than
/// ingest could (decode speed hardly depends on the level).
pub const FRAME_LEVEL: i32 = 9;

/// The largest frame a reader accepts (a corrupt length never makes it allocate more).
pub const MAX_FRAME_PAGES: usize = 16;

/// Why a frame did not decode.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("zstd: {0}")]
    Zstd(#[from] std::io::Error),
    #[error("it decodes to {got} bytes, not {want} ({pages} whole pages)")]
    Length {
        got: usize,
        want: usize,
        pages: usize,
    },
    #[error("a frame of {0} pages is more than the {MAX_FRAME_PAGES} any writer makes")]
    TooManyPages(usize),
}

thread_local! {
    /// One zstd decompression context per thread (creating one costs more than decoding a frame).
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

/// Decodes a frame that holds `pages` whole pages.
pub fn decode(data: &[u8], pages: usize) -> Result<Vec<u8>, FrameError> {
    if pages > MAX_FRAME_PAGES {
        return Err(FrameError::TooManyPages(pages));
    }
    let want = pages * PAGE_SIZE;
    let out = DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let ctx = match slot.as_mut() {
            Some(ctx) => ctx,
            None => slot.insert(zstd::bulk::Decompressor::new()?),
        };
        ctx.decompress(data, want)
    })?;
    if out.len() != want {
        return Err(FrameError::Length {
            got: out.len(),
            want,
            pages,
        });
    }
    Ok(out)
}

/// Encodes frames, reusing one zstd context (a context at level 9 costs more to set up than a
/// frame costs to compress).
pub struct FrameEncoder {
    ctx: zstd::bulk::Compressor<'static>,
}

impl FrameEncoder {
    pub fn new(level: i32) -> std::io::Result<FrameEncoder> {
        let mut ctx = zstd::bulk::Compressor::new(level)?;
        // Every page is checked against its id after decoding: a frame checksum would add 4 bytes
        // and a second hash for nothing. The content size stays in the header (readers check it).
        ctx.include_checksum(false)?;
        ctx.include_contentsize(true)?;
        Ok(FrameEncoder { ctx })
    }

    /// One frame of whole pages, given back to back (a multiple of [`PAGE_SIZE`] bytes).
    pub fn encode(&mut self, pages: &[u8]) -> std::io::Result<Vec<u8>> {
        debug_assert!(
            pages.len().is_multiple_of(PAGE_SIZE) && pages.len() <= MAX_FRAME_PAGES * PAGE_SIZE
        );
        self.ctx.compress(pages)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(i: u8) -> Vec<u8> {
        let line = format!("page {i} of a frame, with some text that repeats\n");
        line.bytes().cycle().take(PAGE_SIZE).collect()
    }

    #[test]
    fn frames_round_trip_and_are_dense() {
        let pages: Vec<Vec<u8>> = (0..4).map(text).collect();
        let mut enc = FrameEncoder::new(FRAME_LEVEL).unwrap();
        let frame = enc.encode(&pages.concat()).unwrap();
        assert!(frame.len() < PAGE_SIZE / 4, "{}", frame.len());
        assert_eq!(decode(&frame, 4).unwrap(), pages.concat());
    }

    #[test]
    fn a_damaged_or_mislabelled_frame_is_an_error() {
        let pages: Vec<Vec<u8>> = (0..2).map(text).collect();
        let mut enc = FrameEncoder::new(3).unwrap();
        let frame = enc.encode(&pages.concat()).unwrap();
        // Fewer pages than it holds, more than a writer makes, truncated, or garbage.
        assert!(decode(&frame, 1).is_err());
        assert!(decode(&frame, 3).is_err());
        assert!(matches!(
            decode(&frame, MAX_FRAME_PAGES + 1),
            Err(FrameError::TooManyPages(_))
        ));
        assert!(decode(&frame[..frame.len() - 1], 2).is_err());
        assert!(decode(&[0u8; 32], 2).is_err());
    }
}
