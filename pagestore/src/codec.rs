//! How one page is encoded at rest: lz4 when that saves space, raw when the page is incompressible,
//! or (in the cold tier, once gc has recompressed its pack) one page of a zstd frame of
//! neighbouring pages ([`crate::frame`]).
//!
//! Every encoded page decodes to exactly [`PAGE_SIZE`] bytes; [`decode_verified`] and
//! [`PageDecoder`] also check the bytes against the page id, so no tier can hand on a wrong page.

use crate::error::{Error, Result};
use crate::page::{PageId, PAGE_SIZE};
use crate::tier::Tier;

/// How a page's bytes are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Codec {
    /// The 4096 bytes as they are.
    Raw = 0,
    /// An lz4 block (no frame) that decompresses to 4096 bytes.
    Lz4 = 1,
    /// A zstd frame that decompresses to several whole pages, of which this is one
    /// ([`Slot`]): the dense encoding of the cold tier ([`crate::frame`]).
    Zstd = 2,
}

impl Codec {
    pub fn from_u8(v: u8) -> Option<Codec> {
        match v {
            0 => Some(Codec::Raw),
            1 => Some(Codec::Lz4),
            2 => Some(Codec::Zstd),
            _ => None,
        }
    }

    /// Whether the encoded bytes are this one page's alone (what the local tier may hold).
    pub fn is_single_page(self) -> bool {
        self != Codec::Zstd
    }
}

/// Which page of its frame an encoded page is: `index` of `of` pages. Pages encoded alone are
/// index 0 of 1 (written as 0 of 0 by the first pack format, which had no frames).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Slot {
    pub index: u8,
    pub of: u8,
}

impl Slot {
    /// A page encoded on its own.
    pub const ALONE: Slot = Slot { index: 0, of: 1 };

    /// How many pages share the encoded bytes (at least 1).
    pub fn pages(self) -> u32 {
        u32::from(self.of.max(1))
    }

    /// This page's share of `len` encoded bytes shared by [`Self::pages`] pages: the shares of a
    /// frame's pages add up to its length exactly (the first pages take the remainder).
    pub fn share_of(self, len: u32) -> u64 {
        let n = self.pages();
        u64::from(len / n + u32::from(u32::from(self.index) < len % n))
    }
}

/// Below this many bytes saved, lz4 is not worth its decompression on every read.
const MIN_SAVING: usize = 256;

/// Encodes a full, non-zero page.
pub fn encode(page: &[u8]) -> (Codec, Vec<u8>) {
    let mut out = Vec::with_capacity(PAGE_SIZE);
    let codec = encode_into(page, &mut out);
    (codec, out)
}

/// Encodes a full, non-zero page onto the end of `out` (no allocation per page when `out` is
/// reused: what ingest does for thousands of pages); returns how it was encoded.
pub fn encode_into(page: &[u8], out: &mut Vec<u8>) -> Codec {
    debug_assert_eq!(page.len(), PAGE_SIZE);
    let start = out.len();
    out.resize(
        start + lz4_flex::block::get_maximum_output_size(PAGE_SIZE),
        0,
    );
    match lz4_flex::block::compress_into(page, &mut out[start..]) {
        Ok(n) if n + MIN_SAVING <= PAGE_SIZE => {
            out.truncate(start + n);
            Codec::Lz4
        }
        // Too little saved (or, never for a full buffer, no room): stored as it is.
        _ => {
            out.truncate(start);
            out.extend_from_slice(page);
            Codec::Raw
        }
    }
}

/// Decodes an encoded page and checks it against `id`. `object` names where it came from, for the
/// error a person reads.
pub fn decode_verified(
    id: &PageId,
    codec: Codec,
    data: &[u8],
    tier: Tier,
    object: &str,
) -> Result<Vec<u8>> {
    let corrupt = || Error::CorruptPage {
        page: *id,
        tier,
        object: object.to_string(),
    };
    let page = match codec {
        Codec::Raw => data.to_vec(),
        Codec::Lz4 => lz4_flex::block::decompress(data, PAGE_SIZE).map_err(|_| corrupt())?,
        Codec::Zstd => {
            return PageDecoder::default().decode(id, codec, Slot::ALONE, 0, data, tier, object)
        }
    };
    if !id.matches(&page) {
        return Err(corrupt());
    }
    Ok(page)
}

/// Decodes pages out of the bytes of a pack, each checked against its id. A zstd frame holds
/// several pages, and a reader usually wants several of them in a row: the last frame decoded is
/// kept, so each frame is decoded once per reader.
#[derive(Default)]
pub struct PageDecoder {
    /// The offset (in its object) and the decoded pages of the last frame.
    frame: Option<(u64, Vec<u8>)>,
}

impl PageDecoder {
    /// The page `id` encoded with `codec` as `slot` of the bytes `data`, which start at `offset`
    /// of `object` (offset and object name the frame in errors, and key the frame kept).
    #[allow(clippy::too_many_arguments)]
    pub fn decode(
        &mut self,
        id: &PageId,
        codec: Codec,
        slot: Slot,
        offset: u64,
        data: &[u8],
        tier: Tier,
        object: &str,
    ) -> Result<Vec<u8>> {
        if codec.is_single_page() {
            return decode_verified(id, codec, data, tier, object);
        }
        let frame_error = |reason: String| Error::CorruptFrame {
            page: *id,
            tier,
            object: object.to_string(),
            offset,
            reason,
        };
        let pages = match &self.frame {
            Some((at, pages)) if *at == offset => pages,
            _ => {
                let pages = crate::frame::decode(data, slot.pages() as usize)
                    .map_err(|e| frame_error(e.to_string()))?;
                &self.frame.insert((offset, pages)).1
            }
        };
        let at = usize::from(slot.index) * PAGE_SIZE;
        let page = pages.get(at..at + PAGE_SIZE).ok_or_else(|| {
            frame_error(format!("it holds no page {} of {}", slot.index, slot.of))
        })?;
        if !id.matches(page) {
            return Err(Error::CorruptPage {
                page: *id,
                tier,
                object: object.to_string(),
            });
        }
        Ok(page.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressible_pages_use_lz4_and_round_trip() {
        let page: Vec<u8> = (0..PAGE_SIZE).map(|i| (i / 64) as u8).collect();
        let (codec, data) = encode(&page);
        assert_eq!(codec, Codec::Lz4);
        assert!(data.len() < PAGE_SIZE / 2);
        let id = PageId::of(&page);
        assert_eq!(
            decode_verified(&id, codec, &data, Tier::Cold, "t").unwrap(),
            page
        );
    }

    #[test]
    fn incompressible_pages_stay_raw() {
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let page: Vec<u8> = (0..PAGE_SIZE)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let (codec, data) = encode(&page);
        assert_eq!(codec, Codec::Raw);
        assert_eq!(data, page);
    }

    #[test]
    fn encode_into_appends_what_encode_returns() {
        let text: Vec<u8> = (0..PAGE_SIZE).map(|i| (i / 64) as u8).collect();
        let mut x: u64 = 7;
        let noise: Vec<u8> = (0..PAGE_SIZE)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (x >> 56) as u8
            })
            .collect();
        let mut out = b"prefix".to_vec();
        let mut expected = out.clone();
        for page in [&text, &noise, &text] {
            let (codec, data) = encode(page);
            assert_eq!(encode_into(page, &mut out), codec);
            expected.extend_from_slice(&data);
        }
        assert_eq!(out, expected);
    }

    #[test]
    fn wrong_bytes_are_an_error_naming_page_and_tier() {
        let page = vec![5u8; PAGE_SIZE];
        let id = PageId::of(&page);
        let (codec, mut data) = encode(&page);
        data[0] ^= 0xff;
        let err = decode_verified(&id, codec, &data, Tier::Local, "obj").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&id.to_string()) && msg.contains("local"),
            "{msg}"
        );
    }
}
