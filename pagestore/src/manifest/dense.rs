//! Version 3 manifests: compressed, and written against a *base* (an earlier full manifest of the
//! same tenant) so that a generation's manifest costs about what changed since.
//!
//! Why: every generation of a tenant listed all its page ids (32 bytes a page) and its small
//! image files again, though few change from one swap to the next; sixty swaps of two small
//! tenants stored more manifest than memory. A delta lists, per paged file, runs of page ids copied
//! from the base's file of the same name and the ids that are new; a small file equal to the base's
//! is not repeated; and the whole body is zstd-compressed (CRIU's small images compress well).
//!
//! Reads stay bounded: a delta is always written against a *full* manifest, never another delta,
//! so opening any checkpoint reads at most two objects (itself and its base); a full manifest is
//! written at least every [`FULL_EVERY`] generations, which bounds how much a delta can grow.
//! Retention keeps the base of every checkpoint it keeps ([`crate::gc`]).
//!
//! Encoding (little-endian; the frame as for every version):
//! ```text
//! "PICOMANI" | 3 u32 | body_len u64 | body | blake3(body) [32]
//! body:  inner_len u64 | zstd(inner)
//! inner: tenant str | generation u64 | created_ms u64 | parent str ("" = none)
//!        | base: generation u64 | id str            (0 and "" = a full manifest)
//!        | packs: u32 n, n × [32]
//!        | files: u32 n, n × (name str | mode u32 | size u64 | kind u8 | ...)
//!            kind 0 inline:   u64 len + data
//!            kind 1 paged:    u64 n, n × [32]
//!            kind 2 inline, the same bytes as the base's file of this name: nothing
//!            kind 3 paged, against the base's file of this name: u64 pages | u32 ops | ops
//!                   op: 0 copy: varint from | varint count    (ids base[from..from+count])
//!                       1 new:  varint count | count × [32]
//!        | locality: u8 0 | 1 + pack [32] | bytes u64 | pages u32
//! varint = LEB128
//! ```

use std::collections::HashMap;

use super::{put_str, CheckpointId, CheckpointRef, FileContent, FileEntry, Reader};
use super::{Manifest, MANIFEST_MAGIC};
use crate::error::{Error, Result};
use crate::page::PageId;

/// The version of compressed manifests, full or written against a base.
pub const MANIFEST_VERSION_DENSE: u32 = 3;

/// A full manifest is written at least every this many generations of a tenant: a delta then
/// lists at most the changes of `FULL_EVERY - 1` generations, and a checkpoint opens with at
/// most two reads whatever its age.
pub const FULL_EVERY: u64 = 8;

/// zstd level of manifest bodies: they are small, so any level is fast.
const LEVEL: i32 = 6;

/// A decoded body larger than this is refused (a manifest of 2^20 pages is ~32 MiB).
const MAX_INNER: u64 = 1 << 30;

const KIND_INLINE: u8 = 0;
const KIND_PAGED: u8 = 1;
const KIND_INLINE_AS_BASE: u8 = 2;
const KIND_PAGED_DELTA: u8 = 3;
const OP_COPY: u8 = 0;
const OP_NEW: u8 = 1;

impl Manifest {
    /// Encodes as version 3, against `base` (a full manifest of the same tenant, and the
    /// checkpoint it is) when given, else as a full manifest.
    pub fn encode_dense(&self, base: Option<(&CheckpointRef, &Manifest)>) -> Result<Vec<u8>> {
        let mut b = Vec::new();
        put_str(&mut b, &self.tenant);
        b.extend_from_slice(&self.generation.to_le_bytes());
        b.extend_from_slice(&self.created_ms.to_le_bytes());
        put_str(
            &mut b,
            self.parent.as_ref().map(|p| p.as_str()).unwrap_or(""),
        );
        match base {
            Some((r, _)) => {
                b.extend_from_slice(&r.generation.to_le_bytes());
                put_str(&mut b, r.id.as_str());
            }
            None => {
                b.extend_from_slice(&0u64.to_le_bytes());
                put_str(&mut b, "");
            }
        }
        b.extend_from_slice(&(self.packs.len() as u32).to_le_bytes());
        for p in &self.packs {
            b.extend_from_slice(&p.0);
        }
        b.extend_from_slice(&(self.files.len() as u32).to_le_bytes());
        for f in &self.files {
            put_str(&mut b, &f.name);
            b.extend_from_slice(&f.mode.to_le_bytes());
            b.extend_from_slice(&f.size.to_le_bytes());
            let in_base = base.and_then(|(_, m)| m.file(&f.name));
            match (&f.content, in_base.map(|e| &e.content)) {
                (FileContent::Inline(data), Some(FileContent::Inline(old))) if data == old => {
                    b.push(KIND_INLINE_AS_BASE);
                }
                (FileContent::Inline(data), _) => {
                    b.push(KIND_INLINE);
                    b.extend_from_slice(&(data.len() as u64).to_le_bytes());
                    b.extend_from_slice(data);
                }
                (FileContent::Paged(pages), Some(FileContent::Paged(old))) => {
                    b.push(KIND_PAGED_DELTA);
                    b.extend_from_slice(&(pages.len() as u64).to_le_bytes());
                    encode_page_delta(&mut b, pages, old);
                }
                (FileContent::Paged(pages), _) => {
                    b.push(KIND_PAGED);
                    b.extend_from_slice(&(pages.len() as u64).to_le_bytes());
                    for p in pages {
                        b.extend_from_slice(&p.0);
                    }
                }
            }
        }
        match &self.locality {
            None => b.push(0),
            Some(l) => {
                b.push(1);
                b.extend_from_slice(&l.pack.0);
                b.extend_from_slice(&l.bytes.to_le_bytes());
                b.extend_from_slice(&l.pages.to_le_bytes());
            }
        }
        let packed = zstd::bulk::compress(&b, LEVEL).map_err(|e| Error::io("<zstd>", e))?;
        let mut body = Vec::with_capacity(8 + packed.len());
        body.extend_from_slice(&(b.len() as u64).to_le_bytes());
        body.extend_from_slice(&packed);
        let mut out = Vec::with_capacity(body.len() + 52);
        out.extend_from_slice(MANIFEST_MAGIC);
        out.extend_from_slice(&MANIFEST_VERSION_DENSE.to_le_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&body);
        out.extend_from_slice(blake3::hash(&body).as_bytes());
        Ok(out)
    }

    /// The full manifest that the manifest in `bytes` is written against, if any: the one other
    /// object a reader needs ([`Manifest::decode_with_base`]).
    pub fn base_of(bytes: &[u8]) -> Result<Option<CheckpointRef>> {
        if super::version_of(bytes)? != MANIFEST_VERSION_DENSE {
            return Ok(None);
        }
        let inner = inner(bytes)?;
        let mut r = Reader(&inner);
        let tenant = r.str()?;
        let _generation = r.u64()?;
        let _created_ms = r.u64()?;
        let _parent = r.str()?;
        base_ref(&mut r, &tenant)
    }

    /// Decodes a manifest of any version; `base` is the decoded manifest [`Manifest::base_of`]
    /// names (needed, and only used, for a delta).
    pub fn decode_with_base(bytes: &[u8], base: Option<&Manifest>) -> Result<Manifest> {
        if super::version_of(bytes)? != MANIFEST_VERSION_DENSE {
            return Manifest::decode(bytes);
        }
        decode_dense(bytes, base)
    }
}

/// The body of a version-3 manifest, checked and decompressed.
fn inner(bytes: &[u8]) -> Result<Vec<u8>> {
    let body = super::checked_body(bytes)?;
    let mut r = Reader(body);
    let len = r.u64()?;
    if len > MAX_INNER {
        return Err(Error::BadManifest(format!(
            "body of {len} bytes is too large"
        )));
    }
    let inner = zstd::bulk::decompress(r.0, len as usize)
        .map_err(|e| Error::BadManifest(format!("body does not decompress: {e}")))?;
    if inner.len() as u64 != len {
        return Err(Error::BadManifest("body shorter than it says".into()));
    }
    Ok(inner)
}

fn base_ref(r: &mut Reader<'_>, tenant: &str) -> Result<Option<CheckpointRef>> {
    let generation = r.u64()?;
    let id = r.str()?;
    if generation == 0 && id.is_empty() {
        return Ok(None);
    }
    let id = CheckpointId::parse(&id)
        .ok_or_else(|| Error::BadManifest(format!("bad base id {id:?}")))?;
    Ok(Some(CheckpointRef {
        tenant: tenant.to_string(),
        generation,
        id,
    }))
}

pub(super) fn decode_dense(bytes: &[u8], base: Option<&Manifest>) -> Result<Manifest> {
    let inner = inner(bytes)?;
    let mut r = Reader(&inner);
    let tenant = r.str()?;
    let generation = r.u64()?;
    let created_ms = r.u64()?;
    let parent = r.parent()?;
    let base_ref = base_ref(&mut r, &tenant)?;
    let base = match (&base_ref, base) {
        (None, _) => None,
        (Some(b), Some(m)) if m.tenant == b.tenant && m.generation == b.generation => Some(m),
        (Some(b), _) => {
            return Err(Error::BadManifest(format!(
                "written against generation {} ({}), which was not given to decode it",
                b.generation, b.id
            )))
        }
    };
    let packs = r.packs()?;
    let n_files = r.u32()? as usize;
    let mut files = Vec::with_capacity(n_files.min(r.0.len()));
    for _ in 0..n_files {
        let name = r.str()?;
        let mode = r.u32()?;
        let size = r.u64()?;
        let in_base = || {
            base.and_then(|m| m.file(&name)).ok_or_else(|| {
                Error::BadManifest(format!("file {name} refers to its base, which lacks it"))
            })
        };
        let kind = r.u8()?;
        let content = match kind {
            KIND_INLINE | KIND_PAGED => r.stored_content(kind)?,
            KIND_INLINE_AS_BASE => match &in_base()?.content {
                FileContent::Inline(data) => FileContent::Inline(data.clone()),
                FileContent::Paged(_) => {
                    return Err(Error::BadManifest(format!(
                        "file {name} is inline as in its base, where it is paged"
                    )))
                }
            },
            KIND_PAGED_DELTA => match &in_base()?.content {
                FileContent::Paged(old) => FileContent::Paged(decode_page_delta(&mut r, old)?),
                FileContent::Inline(_) => {
                    return Err(Error::BadManifest(format!(
                        "file {name} is paged against its base, where it is inline"
                    )))
                }
            },
            k => return Err(Error::BadManifest(format!("unknown file kind {k}"))),
        };
        files.push(FileEntry {
            name,
            mode,
            size,
            content,
        });
    }
    let locality = match r.u8()? {
        0 => None,
        1 => Some(r.locality_pack()?),
        k => return Err(Error::BadManifest(format!("bad locality flag {k}"))),
    };
    r.end()?;
    Ok(Manifest {
        tenant,
        generation,
        created_ms,
        parent,
        packs,
        files,
        locality,
    })
}

/// Writes `pages` as runs copied from `base` and new ids. Most pages of a generation are where
/// they were in its base, or shifted by a mapping added or removed above them: a run is looked
/// for first where the last one continued, then at the same index, then wherever the id first
/// occurs in the base.
fn encode_page_delta(b: &mut Vec<u8>, pages: &[PageId], base: &[PageId]) {
    let mut first: HashMap<PageId, usize> = HashMap::with_capacity(base.len());
    for (i, p) in base.iter().enumerate().rev() {
        first.insert(*p, i);
    }
    let run_at = |i: usize, j: usize| -> usize {
        pages[i..]
            .iter()
            .zip(base.get(j..).unwrap_or(&[]))
            .take_while(|(a, b)| a == b)
            .count()
    };
    let mut ops = Vec::new();
    let mut n_ops = 0u32;
    let mut new: Vec<PageId> = Vec::new();
    let flush_new = |ops: &mut Vec<u8>, n_ops: &mut u32, new: &mut Vec<PageId>| {
        if !new.is_empty() {
            ops.push(OP_NEW);
            put_varint(ops, new.len() as u64);
            for p in new.drain(..) {
                ops.extend_from_slice(&p.0);
            }
            *n_ops += 1;
        }
    };
    // base index - page index of the last run copied.
    let mut shift: i64 = 0;
    let mut i = 0;
    while i < pages.len() {
        let candidates = [
            usize::try_from(i as i64 + shift).ok(),
            Some(i),
            first.get(&pages[i]).copied(),
        ];
        let best = candidates
            .into_iter()
            .flatten()
            .map(|j| (j, run_at(i, j)))
            .max_by_key(|&(_, n)| n)
            .filter(|&(_, n)| n > 0);
        match best {
            Some((j, n)) => {
                flush_new(&mut ops, &mut n_ops, &mut new);
                ops.push(OP_COPY);
                put_varint(&mut ops, j as u64);
                put_varint(&mut ops, n as u64);
                n_ops += 1;
                shift = j as i64 - i as i64;
                i += n;
            }
            None => {
                new.push(pages[i]);
                i += 1;
            }
        }
    }
    flush_new(&mut ops, &mut n_ops, &mut new);
    b.extend_from_slice(&n_ops.to_le_bytes());
    b.extend_from_slice(&ops);
}

fn decode_page_delta(r: &mut Reader<'_>, base: &[PageId]) -> Result<Vec<PageId>> {
    let n = r.u64()? as usize;
    let n_ops = r.u32()?;
    // Every op adds at least one page: a count beyond what the ops could say is corrupt.
    if n > base.len().saturating_mul(n_ops as usize) + r.0.len() / 32 {
        return Err(Error::BadManifest("page list longer than its ops".into()));
    }
    let mut pages = Vec::with_capacity(n);
    for _ in 0..n_ops {
        match r.u8()? {
            OP_COPY => {
                let from = get_varint(r)? as usize;
                let count = get_varint(r)? as usize;
                let run = from
                    .checked_add(count)
                    .and_then(|to| base.get(from..to))
                    .ok_or_else(|| Error::BadManifest("copies pages its base lacks".into()))?;
                pages.extend_from_slice(run);
            }
            OP_NEW => {
                let count = get_varint(r)? as usize;
                if count > r.0.len() / 32 {
                    return Err(Error::BadManifest("truncated page list".into()));
                }
                for _ in 0..count {
                    pages.push(PageId(r.id()?));
                }
            }
            op => return Err(Error::BadManifest(format!("unknown page-list op {op}"))),
        }
        if pages.len() > n {
            return Err(Error::BadManifest("page list longer than it says".into()));
        }
    }
    if pages.len() != n {
        return Err(Error::BadManifest("page list shorter than it says".into()));
    }
    Ok(pages)
}

fn put_varint(b: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        b.push(v as u8 | 0x80);
        v >>= 7;
    }
    b.push(v as u8);
}

fn get_varint(r: &mut Reader<'_>) -> Result<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = r.u8()?;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(Error::BadManifest("varint too long".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::LocalityPack;
    use crate::pack::PackId;
    use crate::page::PAGE_SIZE;
    use proptest::prelude::*;

    /// A page id as real ones are: 32 bytes that do not compress.
    fn id(n: u32) -> PageId {
        PageId(*blake3::hash(&n.to_le_bytes()).as_bytes())
    }

    fn manifest(generation: u64, pages: Vec<PageId>, core: &[u8]) -> Manifest {
        Manifest {
            tenant: "web".into(),
            generation,
            created_ms: 1_700_000_000_000 + generation,
            parent: None,
            packs: vec![PackId([3; 32])],
            files: vec![
                FileEntry {
                    name: "core-1.img".into(),
                    mode: 0o600,
                    size: core.len() as u64,
                    content: FileContent::Inline(core.to_vec()),
                },
                FileEntry {
                    name: "files.img".into(),
                    mode: 0o600,
                    size: 5,
                    content: FileContent::Inline(b"files".to_vec()),
                },
                FileEntry {
                    name: "pages-1.img".into(),
                    mode: 0o644,
                    size: (pages.len() * PAGE_SIZE) as u64,
                    content: FileContent::Paged(pages),
                },
            ],
            locality: Some(LocalityPack {
                pack: PackId([4; 32]),
                bytes: 99,
                pages: 2,
            }),
        }
    }

    fn base_ref(m: &Manifest) -> CheckpointRef {
        CheckpointRef {
            tenant: m.tenant.clone(),
            generation: m.generation,
            id: CheckpointId::of_manifest_bytes(&m.encode_dense(None).unwrap()),
        }
    }

    #[test]
    fn a_full_dense_manifest_round_trips_and_names_no_base() {
        let m = manifest(1, (0..100).map(id).collect(), b"core");
        let b = m.encode_dense(None).unwrap();
        assert_eq!(Manifest::base_of(&b).unwrap(), None);
        assert_eq!(Manifest::decode(&b).unwrap(), m);
        assert_eq!(Manifest::decode_with_base(&b, None).unwrap(), m);
    }

    /// A generation that changed a few pages, inserted a mapping and changed one small file costs
    /// about its changes, and decodes to exactly itself with its base.
    #[test]
    fn a_delta_costs_what_changed_and_decodes_with_its_base() {
        let old: Vec<PageId> = (0..4000).map(id).collect();
        let base = manifest(1, old.clone(), b"core v1");
        let mut pages = old.clone();
        for i in (0..4000).step_by(97) {
            pages[i] = id(100_000 + i as u32);
        }
        // A new mapping of 16 pages in the middle shifts everything after it.
        pages.splice(2000..2000, (0..16).map(|i| id(200_000 + i)));
        pages.extend([PageId::ZERO; 10]);
        let m = manifest(2, pages, b"core v2");
        let full = m.encode_dense(None).unwrap();
        let r = base_ref(&base);
        let delta = m.encode_dense(Some((&r, &base))).unwrap();
        let changed = (4000 / 97 + 1 + 16) * 32;
        assert!(
            delta.len() < changed + 1024 && delta.len() * 20 < full.len(),
            "delta {} bytes, full {}, changed ids {changed} bytes",
            delta.len(),
            full.len()
        );
        assert_eq!(Manifest::base_of(&delta).unwrap(), Some(r));
        assert_eq!(Manifest::decode_with_base(&delta, Some(&base)).unwrap(), m);
    }

    #[test]
    fn a_delta_without_its_base_or_with_another_is_an_error() {
        let base = manifest(1, (0..50).map(id).collect(), b"a");
        let m = manifest(2, (0..60).map(id).collect(), b"b");
        let delta = m.encode_dense(Some((&base_ref(&base), &base))).unwrap();
        assert!(matches!(
            Manifest::decode(&delta),
            Err(Error::BadManifest(_))
        ));
        let other = manifest(5, vec![], b"c");
        assert!(Manifest::decode_with_base(&delta, Some(&other)).is_err());
    }

    #[test]
    fn every_truncation_and_flipped_byte_is_an_error() {
        let base = manifest(1, (0..50).map(id).collect(), b"a");
        let m = manifest(2, (10..70).map(id).collect(), b"b");
        let b = m.encode_dense(Some((&base_ref(&base), &base))).unwrap();
        for n in 0..b.len() {
            assert!(Manifest::decode_with_base(&b[..n], Some(&base)).is_err());
        }
        for n in 12..b.len() {
            let mut bad = b.clone();
            bad[n] ^= 0x10;
            assert!(
                Manifest::decode_with_base(&bad, Some(&base)).is_err(),
                "byte {n}"
            );
        }
    }

    proptest! {
        #[test]
        fn any_page_list_round_trips_against_any_base(
            old in proptest::collection::vec(0u32..40, 0..200),
            new in proptest::collection::vec(0u32..60, 0..200),
        ) {
            let base = manifest(1, old.into_iter().map(id).collect(), b"x");
            let m = manifest(2, new.into_iter().map(id).collect(), b"x");
            let b = m.encode_dense(Some((&base_ref(&base), &base))).unwrap();
            prop_assert_eq!(Manifest::decode_with_base(&b, Some(&base)).unwrap(), m);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut b = MANIFEST_MAGIC.to_vec();
            b.extend_from_slice(&MANIFEST_VERSION_DENSE.to_le_bytes());
            b.extend_from_slice(&bytes);
            let _ = Manifest::decode(&b);
            let _ = Manifest::base_of(&b);
        }
    }
}
