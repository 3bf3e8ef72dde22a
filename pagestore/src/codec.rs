//! How one page is encoded at rest: lz4 when that saves space, raw when the page is incompressible.
//!
//! Every encoded page decodes to exactly [`PAGE_SIZE`] bytes; [`decode_verified`] also checks the
//! bytes against the page id, so no tier can hand on a wrong page.

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
}

impl Codec {
    pub fn from_u8(v: u8) -> Option<Codec> {
        match v {
            0 => Some(Codec::Raw),
            1 => Some(Codec::Lz4),
            _ => None,
        }
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
    };
    if !id.matches(&page) {
        return Err(corrupt());
    }
    Ok(page)
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
