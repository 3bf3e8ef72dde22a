//! Checkpoint manifests: the immutable description of one checkpoint, and the commit point of an
//! ingest.
//!
//! A manifest lists the checkpoint's files in name order. A *paged* file (one the ingest was told
//! to page, or any file too large to keep whole) is its ordered list of page ids; every other file is kept inline.
//! The manifest also names the packs that hold its pages, so any machine that can read the cold
//! tier can restore it. Its id is the BLAKE3 hash of its encoded bytes, so a manifest cannot be
//! changed without changing its name.
//!
//! Encoding (little-endian):
//! ```text
//! "PICOMANI" | version u32 | body_len u64 | body | blake3(body) [32]
//! body: tenant str | generation u64 | created_ms u64 | parent str ("" = none)
//!       | packs: u32 n, n × [32]
//!       | files: u32 n, n × (name str | mode u32 | size u64 | kind u8
//!                           | kind 0: bytes (u64 len + data) | kind 1: u64 n, n × [32])
//!       | version 2 only: locality pack: pack [32] | bytes u64 | pages u32
//! str = u32 len + UTF-8
//! ```
//!
//! Version 2 adds the *locality pack* ([`LocalityPack`]): an extra copy of the pages a restore
//! reads first, in one object. Version 3 ([`dense`]), what ingest writes now, is compressed and
//! may be written against an earlier full manifest of the tenant (a *delta*). Every version
//! decodes; a manifest of a newer version is refused ([`version_in`], [`crate::format`]).

mod dense;
#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
pub mod testing;

use std::fmt;

pub use dense::{FULL_EVERY, MANIFEST_VERSION_DENSE};

use crate::error::{Error, Result};
use crate::pack::PackId;
use crate::page::PageId;

pub const MANIFEST_MAGIC: &[u8; 8] = b"PICOMANI";
/// The newest manifest version (written when the manifest has a locality pack).
pub const MANIFEST_VERSION: u32 = 2;
/// The version of a manifest without a locality pack (what every manifest was before).
pub const MANIFEST_VERSION_PLAIN: u32 = 1;

/// A checkpoint's name: the first 128 bits of the BLAKE3 hash of its manifest, in hex.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CheckpointId(String);

impl CheckpointId {
    pub fn of_manifest_bytes(bytes: &[u8]) -> CheckpointId {
        CheckpointId(blake3::hash(bytes).to_hex()[..32].to_string())
    }
    pub fn parse(s: &str) -> Option<CheckpointId> {
        (s.len() == 32
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
        .then(|| CheckpointId(s.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn object_key(&self) -> String {
        format!("manifests/{}.manifest", self.0)
    }
    pub fn from_object_key(key: &str) -> Option<CheckpointId> {
        CheckpointId::parse(key.strip_prefix("manifests/")?.strip_suffix(".manifest")?)
    }
}

impl fmt::Display for CheckpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CheckpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CheckpointId({})", self.0)
    }
}

/// What a file of a checkpoint holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileContent {
    /// Kept whole in the manifest.
    Inline(Vec<u8>),
    /// Its pages in order; the last may be zero-padded beyond `size`.
    Paged(Vec<PageId>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    pub name: String,
    pub mode: u32,
    pub size: u64,
    pub content: FileContent,
}

impl FileEntry {
    pub fn pages(&self) -> &[PageId] {
        match &self.content {
            FileContent::Paged(p) => p,
            FileContent::Inline(_) => &[],
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub tenant: String,
    pub generation: u64,
    pub created_ms: u64,
    pub parent: Option<CheckpointId>,
    pub packs: Vec<PackId>,
    pub files: Vec<FileEntry>,
    /// An extra copy of the pages the next restore reads first, in one object (see
    /// [`crate::locality`]). Its pages are also in `packs`: the copy is never needed to restore.
    pub locality: Option<LocalityPack>,
}

/// A checkpoint's locality pack: a pack (same format as any other) holding copies of chosen
/// pages in the order they are read, stored under its checkpoint's tenant and generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalityPack {
    pub pack: PackId,
    /// Its size in bytes (lets a reader split it into ranged GETs without asking first).
    pub bytes: u64,
    pub pages: u32,
}

impl LocalityPack {
    /// `locality/<tenant>/<generation>-<pack>.pack`: retention and forget find a tenant's
    /// locality packs by listing, and gc finds the ones no manifest names.
    pub fn object_key(&self, tenant: &str, generation: u64) -> String {
        format!(
            "locality/{tenant}/{generation:010}-{}.pack",
            self.pack.to_hex()
        )
    }

    /// The tenant and generation in a locality pack's key.
    pub fn owner_of_key(key: &str) -> Option<(String, u64)> {
        let rest = key.strip_prefix("locality/")?.strip_suffix(".pack")?;
        let (tenant, name) = rest.split_once('/')?;
        let (generation, pack) = name.split_once('-')?;
        PackId::from_hex(pack)?;
        Some((tenant.to_string(), generation.parse().ok()?))
    }
}

impl Manifest {
    /// The pages of its paged files that hold something, in file and page order (repeats
    /// included): zero pages are never stored nor written.
    pub fn non_zero_pages(&self) -> impl Iterator<Item = &PageId> {
        self.files
            .iter()
            .flat_map(|f| f.pages())
            .filter(|id| !id.is_zero())
    }

    pub fn file(&self, name: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.name == name)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        put_str(&mut b, &self.tenant);
        b.extend_from_slice(&self.generation.to_le_bytes());
        b.extend_from_slice(&self.created_ms.to_le_bytes());
        put_str(
            &mut b,
            self.parent.as_ref().map(|p| p.as_str()).unwrap_or(""),
        );
        b.extend_from_slice(&(self.packs.len() as u32).to_le_bytes());
        for p in &self.packs {
            b.extend_from_slice(&p.0);
        }
        b.extend_from_slice(&(self.files.len() as u32).to_le_bytes());
        for f in &self.files {
            put_str(&mut b, &f.name);
            b.extend_from_slice(&f.mode.to_le_bytes());
            b.extend_from_slice(&f.size.to_le_bytes());
            match &f.content {
                FileContent::Inline(data) => {
                    b.push(0);
                    b.extend_from_slice(&(data.len() as u64).to_le_bytes());
                    b.extend_from_slice(data);
                }
                FileContent::Paged(pages) => {
                    b.push(1);
                    b.extend_from_slice(&(pages.len() as u64).to_le_bytes());
                    for p in pages {
                        b.extend_from_slice(&p.0);
                    }
                }
            }
        }
        let version = match &self.locality {
            None => MANIFEST_VERSION_PLAIN,
            Some(l) => {
                b.extend_from_slice(&l.pack.0);
                b.extend_from_slice(&l.bytes.to_le_bytes());
                b.extend_from_slice(&l.pages.to_le_bytes());
                MANIFEST_VERSION
            }
        };
        let mut out = Vec::with_capacity(b.len() + 52);
        out.extend_from_slice(MANIFEST_MAGIC);
        out.extend_from_slice(&version.to_le_bytes());
        out.extend_from_slice(&(b.len() as u64).to_le_bytes());
        out.extend_from_slice(&b);
        out.extend_from_slice(blake3::hash(&b).as_bytes());
        out
    }

    /// Decodes a full manifest of any version (a delta needs its base:
    /// [`Manifest::decode_with_base`]).
    pub fn decode(bytes: &[u8]) -> Result<Manifest> {
        let version = version_of(bytes)?;
        if version == dense::MANIFEST_VERSION_DENSE {
            return dense::decode_dense(bytes, None);
        }
        let mut r = Reader(checked_body(bytes)?);
        let tenant = r.str()?;
        let generation = r.u64()?;
        let created_ms = r.u64()?;
        let parent = r.parent()?;
        let packs = r.packs()?;
        let n_files = r.u32()? as usize;
        let mut files = Vec::with_capacity(n_files.min(r.0.len()));
        for _ in 0..n_files {
            let name = r.str()?;
            let mode = r.u32()?;
            let size = r.u64()?;
            let kind = r.u8()?;
            let content = r.stored_content(kind)?;
            files.push(FileEntry {
                name,
                mode,
                size,
                content,
            });
        }
        let locality = if version == MANIFEST_VERSION {
            Some(r.locality_pack()?)
        } else {
            None
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
}

/// The newest manifest version this build reads; a newer one is refused ([`crate::format`]).
pub const MANIFEST_VERSION_NEWEST: u32 = dense::MANIFEST_VERSION_DENSE;

/// The version of the manifest in `bytes`, stored as `object` (magic checked; one this build
/// reads, else [`Error::UnsupportedVersion`] naming it).
pub fn version_in(object: &str, bytes: &[u8]) -> Result<u32> {
    if bytes.len() < 20 {
        return Err(Error::BadManifest("truncated header".into()));
    }
    if &bytes[..8] != MANIFEST_MAGIC {
        return Err(Error::BadManifest(
            "bad magic (not a picocenter manifest)".into(),
        ));
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    crate::format::check("manifest", object, version, MANIFEST_VERSION_NEWEST)
}

/// [`version_in`] of bytes whose object the caller did not name (the store names it first).
fn version_of(bytes: &[u8]) -> Result<u32> {
    version_in("(unnamed)", bytes)
}

/// The body of a manifest of any version, checked against its checksum.
fn checked_body(bytes: &[u8]) -> Result<&[u8]> {
    version_of(bytes)?;
    let mut r = Reader(&bytes[12..]);
    let body_len = r.u64()? as usize;
    let body = r.take(body_len)?;
    let sum = r.take(32)?;
    if !r.0.is_empty() {
        return Err(Error::BadManifest("trailing bytes".into()));
    }
    if blake3::hash(body).as_bytes() != sum {
        return Err(Error::BadManifest("checksum mismatch".into()));
    }
    Ok(body)
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u32).to_le_bytes());
    b.extend_from_slice(s.as_bytes());
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(Error::BadManifest("truncated".into()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    fn id(&mut self) -> Result<[u8; 32]> {
        let mut a = [0u8; 32];
        a.copy_from_slice(self.take(32)?);
        Ok(a)
    }
    /// `u32 n, n × [32]`: a manifest's packs.
    fn packs(&mut self) -> Result<Vec<PackId>> {
        let n = self.u32()? as usize;
        let mut packs = Vec::with_capacity(n.min(self.0.len() / 32));
        for _ in 0..n {
            packs.push(PackId(self.id()?));
        }
        Ok(packs)
    }
    /// `u64 n, n × [32]`: a paged file's page ids.
    fn page_ids(&mut self) -> Result<Vec<PageId>> {
        let n = self.u64()? as usize;
        if n > self.0.len() / 32 {
            return Err(Error::BadManifest("truncated page list".into()));
        }
        let mut pages = Vec::with_capacity(n);
        for _ in 0..n {
            pages.push(PageId(self.id()?));
        }
        Ok(pages)
    }
    fn str(&mut self) -> Result<String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec())
            .map_err(|_| Error::BadManifest("string is not UTF-8".into()))
    }
    /// A string: the parent checkpoint's id, empty for none.
    fn parent(&mut self) -> Result<Option<CheckpointId>> {
        match self.str()?.as_str() {
            "" => Ok(None),
            p => CheckpointId::parse(p)
                .map(Some)
                .ok_or_else(|| Error::BadManifest(format!("bad parent id {p:?}"))),
        }
    }
    /// A file's content stored as such after its kind byte (`0`: `u64 len, bytes`; `1`: its
    /// page ids); another kind is refused.
    fn stored_content(&mut self, kind: u8) -> Result<FileContent> {
        match kind {
            0 => {
                let len = self.u64()? as usize;
                Ok(FileContent::Inline(self.take(len)?.to_vec()))
            }
            1 => Ok(FileContent::Paged(self.page_ids()?)),
            k => Err(Error::BadManifest(format!("unknown file kind {k}"))),
        }
    }
    /// `[32] pack, u64 bytes, u32 pages`: the checkpoint's locality pack.
    fn locality_pack(&mut self) -> Result<LocalityPack> {
        Ok(LocalityPack {
            pack: PackId(self.id()?),
            bytes: self.u64()?,
            pages: self.u32()?,
        })
    }
    /// The end of a body: nothing may follow.
    fn end(&self) -> Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::BadManifest("trailing bytes in body".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page::PAGE_SIZE;
    use proptest::prelude::*;

    fn sample() -> Manifest {
        Manifest {
            tenant: "web".into(),
            generation: 3,
            created_ms: 1_700_000_000_000,
            parent: CheckpointId::parse("0123456789abcdef0123456789abcdef"),
            packs: vec![PackId([7; 32])],
            files: vec![
                FileEntry {
                    name: "core-1.img".into(),
                    mode: 0o600,
                    size: 3,
                    content: FileContent::Inline(vec![1, 2, 3]),
                },
                FileEntry {
                    name: "pages-1.img".into(),
                    mode: 0o644,
                    size: 2 * PAGE_SIZE as u64,
                    content: FileContent::Paged(vec![PageId::ZERO, PageId([9; 32])]),
                },
            ],
            locality: None,
        }
    }

    #[test]
    fn round_trip() {
        let m = sample();
        assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
    }

    #[test]
    fn a_manifest_with_a_locality_pack_is_version_2_and_round_trips() {
        let mut m = sample();
        let plain = m.encode();
        assert_eq!(plain[8..12], MANIFEST_VERSION_PLAIN.to_le_bytes());
        m.locality = Some(LocalityPack {
            pack: PackId([5; 32]),
            bytes: 12345,
            pages: 3,
        });
        let b = m.encode();
        assert_eq!(b[8..12], MANIFEST_VERSION.to_le_bytes());
        assert_eq!(Manifest::decode(&b).unwrap(), m);
        for n in 0..b.len() {
            assert!(Manifest::decode(&b[..n]).is_err());
        }
    }

    /// A version-1 manifest as the code before locality packs wrote it (byte for byte) still
    /// decodes, with no locality pack.
    #[test]
    fn an_old_version_1_manifest_still_decodes() {
        let mut body = Vec::new();
        put_str(&mut body, "old");
        body.extend_from_slice(&7u64.to_le_bytes());
        body.extend_from_slice(&1u64.to_le_bytes());
        put_str(&mut body, "");
        body.extend_from_slice(&0u32.to_le_bytes());
        body.extend_from_slice(&1u32.to_le_bytes());
        put_str(&mut body, "core-1.img");
        body.extend_from_slice(&0o600u32.to_le_bytes());
        body.extend_from_slice(&2u64.to_le_bytes());
        body.push(0);
        body.extend_from_slice(&2u64.to_le_bytes());
        body.extend_from_slice(&[4, 2]);
        let mut b = Vec::new();
        b.extend_from_slice(MANIFEST_MAGIC);
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&(body.len() as u64).to_le_bytes());
        b.extend_from_slice(&body);
        b.extend_from_slice(blake3::hash(&body).as_bytes());
        let m = Manifest::decode(&b).unwrap();
        assert_eq!(
            (m.tenant.as_str(), m.generation, m.locality),
            ("old", 7, None)
        );
        assert_eq!(m.files[0].content, FileContent::Inline(vec![4, 2]));
        // Re-encoding it gives the same bytes, so its checkpoint id is unchanged.
        assert_eq!(m.encode(), b);
    }

    #[test]
    fn locality_keys_name_their_owner() {
        let l = LocalityPack {
            pack: PackId([1; 32]),
            bytes: 1,
            pages: 1,
        };
        let key = l.object_key("web-1", 42);
        assert_eq!(
            LocalityPack::owner_of_key(&key),
            Some(("web-1".to_string(), 42))
        );
        assert_eq!(LocalityPack::owner_of_key("locality/x/1-zz.pack"), None);
    }

    #[test]
    fn bad_magic_is_an_error() {
        let mut b = sample().encode();
        b[0] = b'X';
        assert!(matches!(Manifest::decode(&b), Err(Error::BadManifest(m)) if m.contains("magic")));
    }

    #[test]
    fn bad_version_is_an_error() {
        let mut b = sample().encode();
        b[8] = 99;
        assert!(matches!(
            Manifest::decode(&b),
            Err(Error::UnsupportedVersion { found: 99, .. })
        ));
        let err = version_in("manifests/web/0000000001-x.manifest", &b).unwrap_err();
        assert!(
            matches!(&err, Error::UnsupportedVersion { what: "manifest", object, found: 99, supported: 3 }
                if object.ends_with("-x.manifest")),
            "{err}"
        );
    }

    #[test]
    fn every_truncation_is_an_error() {
        let b = sample().encode();
        for n in 0..b.len() {
            assert!(
                Manifest::decode(&b[..n]).is_err(),
                "truncated to {n} decoded"
            );
        }
    }

    #[test]
    fn flipped_body_bit_fails_the_checksum() {
        let mut b = sample().encode();
        let n = b.len();
        b[n - 40] ^= 1;
        assert!(Manifest::decode(&b).is_err());
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Manifest::decode(&bytes);
        }

        #[test]
        fn round_trips_any_manifest(
            tenant in "[a-z0-9-]{1,20}",
            generation in any::<u64>(),
            inline in proptest::collection::vec(any::<u8>(), 0..100),
            pages in proptest::collection::vec(any::<[u8; 32]>(), 0..20),
        ) {
            let m = Manifest {
                tenant, generation, created_ms: 1, parent: None, packs: vec![],
                files: vec![
                    FileEntry { name: "a".into(), mode: 0o600, size: inline.len() as u64,
                                content: FileContent::Inline(inline) },
                    FileEntry { name: "pages-1.img".into(), mode: 0o600,
                                size: (pages.len() * PAGE_SIZE) as u64,
                                content: FileContent::Paged(pages.into_iter().map(PageId).collect()) },
                ],
                locality: None,
            };
            prop_assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
        }
    }
}

/// A checkpoint as the cold tier lists it: `manifests/<tenant>/<generation>-<id>.manifest`.
/// Tenant and generation are in the key so that listing a tenant's history reads no manifest.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct CheckpointRef {
    pub tenant: String,
    pub generation: u64,
    pub id: CheckpointId,
}

impl serde::Serialize for CheckpointId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl CheckpointRef {
    pub fn object_key(&self) -> String {
        format!(
            "manifests/{}/{:010}-{}.manifest",
            self.tenant, self.generation, self.id
        )
    }

    pub fn from_object_key(key: &str) -> Option<CheckpointRef> {
        let rest = key.strip_prefix("manifests/")?.strip_suffix(".manifest")?;
        let (tenant, name) = rest.split_once('/')?;
        let (generation, id) = name.split_once('-')?;
        Some(CheckpointRef {
            tenant: valid_tenant_name(tenant).then(|| tenant.to_string())?,
            generation: generation.parse().ok()?,
            id: CheckpointId::parse(id)?,
        })
    }
}

/// Tenant names are DNS-label-like: they become object keys and directory names.
pub fn valid_tenant_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
}

#[cfg(test)]
mod key_tests {
    use super::*;

    #[test]
    fn checkpoint_keys_round_trip() {
        let c = CheckpointRef {
            tenant: "mail-1".into(),
            generation: 12,
            id: CheckpointId::of_manifest_bytes(b"x"),
        };
        assert_eq!(CheckpointRef::from_object_key(&c.object_key()), Some(c));
        assert_eq!(
            CheckpointRef::from_object_key("manifests/../1-x.manifest"),
            None
        );
        assert!(!valid_tenant_name("../x") && !valid_tenant_name("") && valid_tenant_name("a.b"));
    }
}
