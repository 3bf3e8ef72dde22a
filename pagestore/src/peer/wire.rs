//! How pages travel between peers: a request is the ids asked (32 bytes each, nothing else);
//! the answer is, for each id in order, one byte (the codec, or [`NOT_HELD`]) and, when held,
//! the encoded length (u32, little-endian) and bytes. Binary, because a move's pages are most
//! of what crosses the wire and JSON would double them.
//!
//! Both ends decode defensively: a request or answer that does not parse is an error naming
//! what is wrong, never a panic; the reader still checks every page against its id.

use bytes::Bytes;

use crate::codec::Codec;
use crate::page::{PageId, PAGE_SIZE};

use super::PeerPages;

/// The answer's marker of a page the peer does not hold.
pub const NOT_HELD: u8 = 0xff;

/// Most pages one request may ask for (16 MiB of pages; a reader sends more requests).
pub const MAX_PAGES_PER_REQUEST: usize = 4096;

/// The body of a request for `ids`.
pub fn encode_request(ids: &[PageId]) -> Vec<u8> {
    ids.iter().flat_map(|id| id.0).collect()
}

/// The ids a request body asks for.
pub fn decode_request(body: &[u8]) -> Result<Vec<PageId>, String> {
    if !body.len().is_multiple_of(32) {
        return Err(format!(
            "a request is page ids of 32 bytes each; {} bytes is not",
            body.len()
        ));
    }
    let count = body.len() / 32;
    if count > MAX_PAGES_PER_REQUEST {
        return Err(format!(
            "{count} pages asked at once; at most {MAX_PAGES_PER_REQUEST}"
        ));
    }
    Ok(body
        .chunks_exact(32)
        .map(|c| {
            let mut id = [0; 32];
            id.copy_from_slice(c);
            PageId(id)
        })
        .collect())
}

/// The answer's body: each page as held (codec and encoded bytes), or not held.
pub fn encode_answer(pages: &[Option<(Codec, Vec<u8>)>]) -> Vec<u8> {
    let size = pages
        .iter()
        .map(|p| p.as_ref().map_or(1, |(_, data)| 5 + data.len()))
        .sum();
    let mut out = Vec::with_capacity(size);
    for page in pages {
        match page {
            None => out.push(NOT_HELD),
            Some((codec, data)) => {
                out.push(*codec as u8);
                out.extend_from_slice(&(data.len() as u32).to_le_bytes());
                out.extend_from_slice(data);
            }
        }
    }
    out
}

/// The pages of an answer to a request for `asked` pages.
pub fn decode_answer(body: Bytes, asked: usize) -> Result<PeerPages, String> {
    let mut pages = Vec::with_capacity(asked);
    let mut at = 0;
    while pages.len() < asked {
        let Some(&tag) = body.get(at) else {
            return Err(format!(
                "the answer ends after {} of {asked} pages",
                pages.len()
            ));
        };
        at += 1;
        if tag == NOT_HELD {
            pages.push(None);
            continue;
        }
        let codec =
            Codec::from_u8(tag).ok_or_else(|| format!("unknown codec {tag} at byte {}", at - 1))?;
        let len = body
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or_else(|| format!("the answer ends inside a length at byte {at}"))?;
        at += 4;
        if len > PAGE_SIZE + 64 {
            return Err(format!(
                "a page of {len} bytes at byte {at}: larger than any encoding"
            ));
        }
        if at + len > body.len() {
            return Err(format!("the answer ends inside a page at byte {at}"));
        }
        pages.push(Some((codec, body.slice(at..at + len))));
        at += len;
    }
    if at != body.len() {
        return Err(format!("{} bytes after the last page", body.len() - at));
    }
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> PageId {
        PageId([n; 32])
    }

    #[test]
    fn requests_and_answers_round_trip() {
        let ids = [id(1), id(2), id(3)];
        assert_eq!(decode_request(&encode_request(&ids)).unwrap(), ids);
        let answer = encode_answer(&[
            Some((Codec::Lz4, vec![7; 10])),
            None,
            Some((Codec::Raw, vec![1; PAGE_SIZE])),
        ]);
        let pages = decode_answer(Bytes::from(answer), 3).unwrap();
        assert_eq!(pages[0], Some((Codec::Lz4, Bytes::from(vec![7; 10]))));
        assert_eq!(pages[1], None);
        assert_eq!(pages[2].as_ref().map(|p| p.1.len()), Some(PAGE_SIZE));
    }

    #[test]
    fn malformed_bodies_are_errors_that_say_what_is_wrong() {
        assert!(decode_request(&[0; 33]).unwrap_err().contains("32 bytes"));
        let too_many = vec![0; 32 * (MAX_PAGES_PER_REQUEST + 1)];
        assert!(decode_request(&too_many).unwrap_err().contains("at most"));
        let ok = encode_answer(&[Some((Codec::Lz4, vec![7; 10]))]);
        let cut = Bytes::from(ok[..8].to_vec());
        assert!(decode_answer(cut, 1).unwrap_err().contains("inside a page"));
        assert!(decode_answer(Bytes::from(ok.clone()), 2)
            .unwrap_err()
            .contains("after 1 of 2"));
        let mut extra = ok.clone();
        extra.push(0);
        assert!(decode_answer(Bytes::from(extra), 1)
            .unwrap_err()
            .contains("after the last"));
        let mut bad = ok;
        bad[0] = 9;
        assert!(decode_answer(Bytes::from(bad), 1)
            .unwrap_err()
            .contains("unknown codec"));
        let huge = [&[1u8][..], &(1u32 << 20).to_le_bytes()].concat();
        assert!(decode_answer(Bytes::from(huge), 1)
            .unwrap_err()
            .contains("larger"));
    }
}
