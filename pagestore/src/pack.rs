//! Packs: the cold tier's unit of storage, many encoded pages in one immutable object.
//!
//! One object per 4 KiB page would cost one request per page; a pack holds thousands, and any
//! page in it is still one ranged read away (offset and length are in the pack's own index, and in
//! the store's catalog). Packs are named by the BLAKE3 hash of their bytes, so they are immutable
//! and a re-upload of the same pack is harmless.
//!
//! Layout (little-endian):
//! ```text
//! header  "PICOPACK" | version u32 | salt u32                        16 bytes
//! pages   encoded page bytes, back to back
//! index   per page: id [32] | offset u64 | len u32 | codec u8 | slot u8 | of u8 | 0 u8
//!                                                                       48 bytes each
//! footer  index_offset u64 | count u32 | version u32 | blake3(index) [32] | "PICOPKIX"  56 bytes
//! ```
//!
//! The salt is 0 unless those bytes would take the name of a pack that already exists, which a
//! gc may be deleting ([`renamed`]); readers ignore it.
//!
//! Version 1 (what ingest writes): every page encoded alone (raw or lz4), `slot` and `of` 0.
//! Version 2 (what gc's recompression writes, [`crate::frame`]): zstd frames of a few pages; the
//! pages of one frame share its offset and length, and `slot` of `of` says which page of it each
//! is. Both versions are read; a pack of a newer version is refused ([`crate::format`]).
//!
//! The footer's version is the pack's version (a reader of ranges reads only the tail). The
//! header's version field is 1 in every pack written so far, dense ones included, and is not read.

use std::fmt;

use crate::codec::{Codec, Slot};
use crate::error::{Error, Result};
use crate::page::PageId;

pub const PACK_MAGIC: &[u8; 8] = b"PICOPACK";
pub const INDEX_MAGIC: &[u8; 8] = b"PICOPKIX";
/// The version of a pack of pages encoded one by one (what ingest writes).
pub const PACK_VERSION: u32 = 1;
/// The version of a pack of zstd frames (what gc's recompression writes).
pub const PACK_VERSION_DENSE: u32 = 2;
/// The newest pack version this build reads; a pack of a newer one is refused
/// ([`crate::format`]).
pub const PACK_VERSION_NEWEST: u32 = PACK_VERSION_DENSE;
pub const HEADER_LEN: usize = 16;
pub const FOOTER_LEN: usize = 56;
pub const INDEX_ENTRY_LEN: usize = 48;

/// Packs are closed at about this size: large enough that a request's fixed cost (~20 ms to S3)
/// is small against its transfer, small enough that repacking after GC stays cheap.
pub const TARGET_PACK_BYTES: usize = 8 << 20;

/// The name of a pack: BLAKE3-256 of its bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackId(pub [u8; 32]);

impl PackId {
    pub fn to_hex(&self) -> String {
        PageId(self.0).to_hex()
    }
    pub fn from_hex(s: &str) -> Option<PackId> {
        PageId::from_hex(s).map(|p| PackId(p.0))
    }
    /// The key of this pack in the cold tier.
    pub fn object_key(&self) -> String {
        format!("packs/{}.pack", self.to_hex())
    }
    pub fn from_object_key(key: &str) -> Option<PackId> {
        PackId::from_hex(key.strip_prefix("packs/")?.strip_suffix(".pack")?)
    }
}

impl fmt::Display for PackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &self.to_hex()[..16])
    }
}

impl fmt::Debug for PackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PackId({self})")
    }
}

/// Where one page lives inside a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackEntry {
    pub id: PageId,
    pub offset: u64,
    pub len: u32,
    pub codec: Codec,
    /// Which page of its frame (pages encoded alone: [`Slot::ALONE`]).
    pub slot: Slot,
}

impl PackEntry {
    /// This page's share of the pack's bytes (a frame's length is shared by its pages).
    pub fn stored_bytes(&self) -> u64 {
        self.slot.share_of(self.len)
    }
}

/// Builds one pack in memory.
pub struct PackBuilder {
    data: Vec<u8>,
    entries: Vec<PackEntry>,
}

/// A fresh pack with its header: `std::mem::take` of a builder leaves a valid one behind (a
/// derived `Default` without the header made every pack after the first unreadable).
impl Default for PackBuilder {
    fn default() -> Self {
        PackBuilder::new()
    }
}

impl PackBuilder {
    pub fn new() -> Self {
        // Room for a full pack, its last page and its tail ([`Self::is_full`] counts the index),
        // so that neither filling nor sealing it moves the bytes.
        let mut data = Vec::with_capacity(
            TARGET_PACK_BYTES + crate::page::PAGE_SIZE + INDEX_ENTRY_LEN + FOOTER_LEN,
        );
        data.extend_from_slice(PACK_MAGIC);
        data.extend_from_slice(&PACK_VERSION.to_le_bytes());
        data.extend_from_slice(&0u32.to_le_bytes());
        PackBuilder {
            data,
            entries: Vec::new(),
        }
    }

    pub fn push(&mut self, id: PageId, codec: Codec, encoded: &[u8]) {
        debug_assert!(codec.is_single_page());
        self.entries.push(PackEntry {
            id,
            offset: self.data.len() as u64,
            len: encoded.len() as u32,
            codec,
            slot: Slot::ALONE,
        });
        self.data.extend_from_slice(encoded);
    }

    /// Appends one zstd frame holding the pages `ids`, in order ([`crate::frame`]).
    pub fn push_frame(&mut self, ids: &[PageId], frame: &[u8]) {
        debug_assert!(!ids.is_empty() && ids.len() <= crate::frame::MAX_FRAME_PAGES);
        let offset = self.data.len() as u64;
        for (i, id) in ids.iter().enumerate() {
            self.entries.push(PackEntry {
                id: *id,
                offset,
                len: frame.len() as u32,
                codec: Codec::Zstd,
                slot: Slot {
                    index: i as u8,
                    of: ids.len() as u8,
                },
            });
        }
        self.data.extend_from_slice(frame);
    }

    /// The bytes written so far (header and pages; the tail comes at [`Self::finish`]).
    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the pack, with the index it will end with, has reached [`TARGET_PACK_BYTES`].
    pub fn is_full(&self) -> bool {
        self.data.len() + self.entries.len() * INDEX_ENTRY_LEN >= TARGET_PACK_BYTES
    }

    /// Seals the pack: appends index and footer, names it.
    pub fn finish(mut self) -> (PackId, Vec<u8>, Vec<PackEntry>) {
        let (index, footer) = encode_tail(&self.entries, self.data.len() as u64);
        self.data.extend_from_slice(&index);
        self.data.extend_from_slice(&footer);
        let id = PackId(*blake3::hash(&self.data).as_bytes());
        (id, self.data, self.entries)
    }
}

/// A sealed pack under another name: the same pages and index, its salt set to `salt` (see the
/// layout). An ingest storing again pages a gc deletes can seal exactly the bytes of the pack
/// that gc is deleting; uploaded under that name, the gc's delete would take them too.
pub fn renamed(mut data: Vec<u8>, salt: u32) -> (PackId, Vec<u8>) {
    data[12..HEADER_LEN].copy_from_slice(&salt.to_le_bytes());
    (PackId(*blake3::hash(&data).as_bytes()), data)
}

/// The index and footer that end a pack whose page bytes end at `index_offset`: exactly the bytes
/// a reader of the pack's tail gets back.
pub fn encode_tail(entries: &[PackEntry], index_offset: u64) -> (Vec<u8>, Vec<u8>) {
    let index = encode_index(entries);
    let mut footer = Vec::with_capacity(FOOTER_LEN);
    footer.extend_from_slice(&index_offset.to_le_bytes());
    footer.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    footer.extend_from_slice(&version_of(entries).to_le_bytes());
    footer.extend_from_slice(blake3::hash(&index).as_bytes());
    footer.extend_from_slice(INDEX_MAGIC);
    (index, footer)
}

/// The oldest pack version that can hold these entries (old readers keep reading ingest's packs).
fn version_of(entries: &[PackEntry]) -> u32 {
    if entries.iter().all(|e| e.codec.is_single_page()) {
        PACK_VERSION
    } else {
        PACK_VERSION_DENSE
    }
}

/// Whether a pack is still waiting for gc's recompression: any page encoded alone.
pub fn is_fast(entries: &[PackEntry]) -> bool {
    entries.iter().any(|e| e.codec.is_single_page())
}

fn encode_index(entries: &[PackEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * INDEX_ENTRY_LEN);
    for e in entries {
        out.extend_from_slice(&e.id.0);
        out.extend_from_slice(&e.offset.to_le_bytes());
        out.extend_from_slice(&e.len.to_le_bytes());
        out.push(e.codec as u8);
        match e.codec {
            Codec::Zstd => out.extend_from_slice(&[e.slot.index, e.slot.of, 0]),
            // As the first format wrote them.
            _ => out.extend_from_slice(&[0; 3]),
        }
    }
    out
}

/// The parsed footer of a pack: where its index is.
#[derive(Clone, Copy, Debug)]
pub struct Footer {
    pub index_offset: u64,
    pub count: u32,
    pub index_hash: [u8; 32],
}

impl Footer {
    pub fn index_len(&self) -> usize {
        self.count as usize * INDEX_ENTRY_LEN
    }
}

pub fn parse_footer(object: &str, tail: &[u8], pack_len: u64) -> Result<Footer> {
    let bad = |reason: &str| Error::CorruptObject {
        what: "pack",
        object: object.to_string(),
        reason: reason.to_string(),
    };
    if tail.len() != FOOTER_LEN {
        return Err(bad("truncated footer"));
    }
    if &tail[48..56] != INDEX_MAGIC {
        return Err(bad("bad footer magic"));
    }
    let version = u32::from_le_bytes(tail[12..16].try_into().map_err(|_| bad("footer"))?);
    crate::format::check("pack", object, version, PACK_VERSION_NEWEST)?;
    let footer = Footer {
        index_offset: u64::from_le_bytes(tail[0..8].try_into().map_err(|_| bad("footer"))?),
        count: u32::from_le_bytes(tail[8..12].try_into().map_err(|_| bad("footer"))?),
        index_hash: tail[16..48].try_into().map_err(|_| bad("footer"))?,
    };
    let end = footer.index_offset + footer.index_len() as u64 + FOOTER_LEN as u64;
    if footer.index_offset < HEADER_LEN as u64 || end != pack_len {
        return Err(bad("index does not fit the pack"));
    }
    Ok(footer)
}

pub fn parse_index(object: &str, footer: &Footer, index: &[u8]) -> Result<Vec<PackEntry>> {
    let bad = |reason: &str| Error::CorruptObject {
        what: "pack index",
        object: object.to_string(),
        reason: reason.to_string(),
    };
    if index.len() != footer.index_len() {
        return Err(bad("truncated index"));
    }
    if blake3::hash(index).as_bytes() != &footer.index_hash {
        return Err(bad("index checksum mismatch"));
    }
    index
        .chunks_exact(INDEX_ENTRY_LEN)
        .map(|e| {
            let id = PageId(e[0..32].try_into().map_err(|_| bad("entry"))?);
            let offset = u64::from_le_bytes(e[32..40].try_into().map_err(|_| bad("entry"))?);
            let len = u32::from_le_bytes(e[40..44].try_into().map_err(|_| bad("entry"))?);
            let codec = Codec::from_u8(e[44]).ok_or_else(|| bad("unknown page codec"))?;
            if offset + u64::from(len) > footer.index_offset || offset < HEADER_LEN as u64 {
                return Err(bad("page outside the pack's data"));
            }
            let slot = match codec {
                Codec::Zstd => Slot {
                    index: e[45],
                    of: e[46],
                },
                _ => Slot::ALONE,
            };
            if slot.index >= slot.of || usize::from(slot.of) > crate::frame::MAX_FRAME_PAGES {
                return Err(bad("page outside its frame"));
            }
            Ok(PackEntry {
                id,
                offset,
                len,
                codec,
                slot,
            })
        })
        .collect()
}

/// Parses a whole pack held in memory: checks its header, footer and index.
pub fn parse_pack(object: &str, data: &[u8]) -> Result<Vec<PackEntry>> {
    if data.len() < HEADER_LEN + FOOTER_LEN || &data[..8] != PACK_MAGIC {
        return Err(Error::CorruptObject {
            what: "pack",
            object: object.to_string(),
            reason: "bad header".into(),
        });
    }
    let footer = parse_footer(object, &data[data.len() - FOOTER_LEN..], data.len() as u64)?;
    let start = footer.index_offset as usize;
    parse_index(object, &footer, &data[start..start + footer.index_len()])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;
    use crate::page::PAGE_SIZE;
    use crate::tier::Tier;

    #[test]
    fn pack_round_trip_and_ranged_reads() {
        let mut b = PackBuilder::new();
        let pages: Vec<Vec<u8>> = (1..=5u8).map(|i| vec![i; PAGE_SIZE]).collect();
        for p in &pages {
            let (c, enc) = codec::encode(p);
            b.push(PageId::of(p), c, &enc);
        }
        let (id, data, entries) = b.finish();
        assert_eq!(id, PackId(*blake3::hash(&data).as_bytes()));
        let parsed = parse_pack("p", &data).unwrap();
        assert_eq!(parsed, entries);
        for (e, p) in parsed.iter().zip(&pages) {
            let raw = &data[e.offset as usize..(e.offset + e.len as u64) as usize];
            assert_eq!(
                &codec::decode_verified(&e.id, e.codec, raw, Tier::Cold, "p").unwrap(),
                p
            );
        }
        assert_eq!(PackId::from_object_key(&id.object_key()), Some(id));
    }

    #[test]
    fn damaged_packs_are_rejected() {
        let mut b = PackBuilder::new();
        let (c, enc) = codec::encode(&[9u8; PAGE_SIZE]);
        b.push(PageId::of(&[9u8; PAGE_SIZE]), c, &enc);
        let (_, data, _) = b.finish();
        assert!(parse_pack("p", &data[..data.len() - 1]).is_err());
        let mut bad = data.clone();
        let n = bad.len();
        bad[n - FOOTER_LEN - 10] ^= 1; // inside the index
        assert!(parse_pack("p", &bad).is_err());
        let mut bad = data;
        bad[0] = b'X';
        assert!(parse_pack("p", &bad).is_err());
    }

    #[test]
    fn a_pack_of_a_newer_version_is_refused_by_name_and_versions() {
        let mut b = PackBuilder::new();
        let (c, enc) = codec::encode(&[9u8; PAGE_SIZE]);
        b.push(PageId::of(&[9u8; PAGE_SIZE]), c, &enc);
        let (_, mut data, _) = b.finish();
        let n = data.len();
        data[n - FOOTER_LEN + 12..n - FOOTER_LEN + 16].copy_from_slice(&3u32.to_le_bytes());
        let err = parse_pack("packs/abc.pack", &data).unwrap_err();
        assert!(
            matches!(&err, Error::UnsupportedVersion { what: "pack", object, found: 3, supported: 2 }
                if object == "packs/abc.pack"),
            "{err}"
        );
    }
}
