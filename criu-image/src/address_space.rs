//! Processes' address spaces as CRIU dumped them (`mm-PID.img`), and page addresses written
//! relative to their mappings, so that an address in one process names the same data in another
//! process of the same program whose mappings ASLR placed elsewhere.
//!
//! Why: an ActiveSet names pages by pagemap and virtual address. Two tenants of one program,
//! started alike and given alike requests, make the same mappings in the same order and touch
//! the same parts of them; with ASLR each mapping starts at another address, so one tenant's set
//! names nothing in the other's image. Relative to its mapping (the how-manieth mapping of its
//! kind, and the offset in it) a page is found again: the set learned by one tenant then serves
//! the first restore of the next (see the worker's `program_sets`). A wrong guess costs bytes
//! fetched ahead of time, never correctness: the set only chooses which pages are eager.
//!
//! `mm-PID.img` is two u32 magics and one `[u32 len][protobuf]` record, an `mm_entry` whose field
//! 14 repeats `vma_entry` (`start`=1, `end`=2, `pgoff`=3, `shmid`=4, `prot`=5, `flags`=6,
//! `status`=7; CRIU's images/mm.proto and images/vma.proto, MIT). `status` holds CRIU's
//! `VMA_AREA_*`/`VMA_FILE_*`/`VMA_ANON_*` bits (criu/include/image.h); for a file mapping,
//! `shmid` is the id of its file in the dump, which CRIU numbers in the order it meets them.

use std::collections::HashMap;
use std::path::Path;

use pagestore::Manifest;

use crate::error::{Error, Result};
use crate::files::{inline_files, read_dir_files};
use crate::names::is_process_pagemap;
use crate::pagemap::IMG_COMMON_MAGIC;
use crate::protowire::{Fields, Value};

pub const MM_MAGIC: u32 = 0x5749_2820;

const MAP_SHARED: u32 = 0x1;
const MAP_PRIVATE: u32 = 0x2;
const MAP_ANONYMOUS: u32 = 0x20;
const MAP_GROWSDOWN: u32 = 0x100;

/// CRIU's status bits that say what a mapping is (not how CRIU handles it).
const VMA_KIND_BITS: u32 = (1 << 1) // VMA_AREA_STACK
    | (1 << 2) // VMA_AREA_VSYSCALL
    | (1 << 3) // VMA_AREA_VDSO
    | (1 << 5) // VMA_AREA_HEAP
    | (1 << 6) // VMA_FILE_PRIVATE
    | (1 << 7) // VMA_FILE_SHARED
    | (1 << 8) // VMA_ANON_SHARED
    | (1 << 9) // VMA_ANON_PRIVATE
    | (1 << 10) // VMA_AREA_SYSVIPC
    | (1 << 11) // VMA_AREA_SOCKET
    | (1 << 12) // VMA_AREA_VVAR
    | (1 << 13) // VMA_AREA_AIORING
    | (1 << 14); // VMA_AREA_MEMFD
const VMA_FILE_BITS: u32 = (1 << 6) | (1 << 7);
const VMA_AREA_HEAP: u32 = 1 << 5;
const VMA_ANON_PRIVATE: u32 = 1 << 9;

/// One mapping of a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    pub pgoff: u64,
    pub shmid: u64,
    pub prot: u32,
    pub flags: u32,
    pub status: u32,
}

impl Vma {
    /// What the mapping is, whatever its address and size.
    fn class(&self) -> VmaClass {
        let kind = self.status & VMA_KIND_BITS;
        VmaClass {
            kind,
            prot: self.prot,
            flags: self.flags & (MAP_SHARED | MAP_PRIVATE | MAP_ANONYMOUS | MAP_GROWSDOWN),
            file: (kind & VMA_FILE_BITS != 0).then_some((self.shmid, self.pgoff)),
        }
    }

    /// Whether its pages keep their place counted from its end rather than its start: a stack
    /// grows down from its end; anonymous mappings are made top-down, so an area of them that
    /// merged into one mapping (Python's arenas, a JIT's heap) grew downwards too, its oldest
    /// part at its end. A heap (`brk`) and a file's mapping grow up from their start.
    fn placed_from_end(&self) -> bool {
        self.flags & MAP_GROWSDOWN != 0
            || (self.status & VMA_ANON_PRIVATE != 0 && self.status & VMA_AREA_HEAP == 0)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct VmaClass {
    kind: u32,
    prot: u32,
    flags: u32,
    file: Option<(u64, u64)>,
}

/// A mapping as another process of the program would have it: its class, with its length or
/// not, and how many mappings of that class (and length) lie below it. Mappings of one length
/// are told apart by their length wherever each was placed (a 1 MiB arena that ASLR put below
/// the libraries in one process and above them in another); one whose length differs (a grown
/// area) is found by its class's order alone.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct VmaKey {
    class: VmaClass,
    len: Option<u64>,
    ordinal: u32,
}

/// An address relative to its mapping (see [`Vma::placed_from_end`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelativeAddr {
    sized: VmaKey,
    key: VmaKey,
    from_end: bool,
    offset: u64,
}

/// One process's mappings, in address order.
#[derive(Clone, Debug, Default)]
pub struct AddressSpace {
    vmas: Vec<Vma>,
    /// Each mapping's key without its length, then with it.
    keys: Vec<(VmaKey, VmaKey)>,
    by_key: HashMap<VmaKey, usize>,
}

impl AddressSpace {
    pub fn new(mut vmas: Vec<Vma>) -> AddressSpace {
        vmas.sort_by_key(|v| v.start);
        let mut seen: HashMap<(VmaClass, Option<u64>), u32> = HashMap::new();
        let mut key = |class: VmaClass, len: Option<u64>| {
            let n = seen.entry((class.clone(), len)).or_default();
            *n += 1;
            VmaKey {
                class,
                len,
                ordinal: *n - 1,
            }
        };
        let keys: Vec<(VmaKey, VmaKey)> = vmas
            .iter()
            .map(|v| (key(v.class(), None), key(v.class(), Some(v.end - v.start))))
            .collect();
        let mut by_key = HashMap::new();
        for (i, (key, sized)) in keys.iter().enumerate() {
            by_key.insert(key.clone(), i);
            by_key.insert(sized.clone(), i);
        }
        AddressSpace { vmas, keys, by_key }
    }

    /// Decodes `mm-PID.img`.
    pub fn decode(bytes: &[u8]) -> Result<AddressSpace> {
        if bytes.len() < 12 {
            return Err(Error::MmTruncated);
        }
        let word =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        if word(0) != IMG_COMMON_MAGIC || word(4) != MM_MAGIC {
            return Err(Error::NotMm(word(0), word(4)));
        }
        let len = word(8) as usize;
        let entry = bytes.get(12..12 + len).ok_or(Error::MmTruncated)?;
        let mut vmas = Vec::new();
        let mut fields = Fields::new(entry);
        while let Some((field, value)) = fields.next_field()? {
            if let (14, Value::Bytes(vma)) = (field, value) {
                vmas.push(decode_vma(vma)?);
            }
        }
        Ok(AddressSpace::new(vmas))
    }

    pub fn vmas(&self) -> &[Vma] {
        &self.vmas
    }

    /// The index (in address order) of the mapping that holds `vaddr`.
    pub fn mapping_of(&self, vaddr: u64) -> Option<usize> {
        let i = self
            .vmas
            .partition_point(|v| v.start <= vaddr)
            .checked_sub(1)?;
        (vaddr < self.vmas[i].end).then_some(i)
    }

    /// `vaddr` relative to the mapping that holds it; `None` outside every mapping.
    pub fn relative(&self, vaddr: u64) -> Option<RelativeAddr> {
        let i = self.mapping_of(vaddr)?;
        let vma = &self.vmas[i];
        let from_end = vma.placed_from_end();
        let (key, sized) = self.keys[i].clone();
        Some(RelativeAddr {
            sized,
            key,
            from_end,
            offset: if from_end {
                vma.end - vaddr
            } else {
                vaddr - vma.start
            },
        })
    }

    /// The address of `addr` in this process: in its mapping of the same key (of the same
    /// length if it has one), at the same offset; `None` when it has no such mapping or the
    /// mapping is too small.
    pub fn absolute(&self, addr: &RelativeAddr) -> Option<u64> {
        let i = self
            .by_key
            .get(&addr.sized)
            .or_else(|| self.by_key.get(&addr.key))?;
        let vma = &self.vmas[*i];
        let vaddr = if addr.from_end {
            vma.end.checked_sub(addr.offset)?
        } else {
            vma.start.checked_add(addr.offset)?
        };
        (vma.start..vma.end).contains(&vaddr).then_some(vaddr)
    }
}

fn decode_vma(bytes: &[u8]) -> Result<Vma> {
    let mut vma = Vma {
        start: 0,
        end: 0,
        pgoff: 0,
        shmid: 0,
        prot: 0,
        flags: 0,
        status: 0,
    };
    let mut fields = Fields::new(bytes);
    while let Some((field, value)) = fields.next_field()? {
        let Value::Varint(v) = value else { continue };
        match field {
            1 => vma.start = v,
            2 => vma.end = v,
            3 => vma.pgoff = v,
            4 => vma.shmid = v,
            5 => vma.prot = v as u32,
            6 => vma.flags = v as u32,
            7 => vma.status = v as u32,
            _ => {}
        }
    }
    if vma.end <= vma.start {
        return Err(Error::MmBadVma(vma.start, vma.end));
    }
    Ok(vma)
}

/// The address spaces of a dump's processes, by the name of each one's pagemap
/// (`pagemap-PID.img` for `mm-PID.img`).
#[derive(Clone, Debug, Default)]
pub struct ImageSpaces {
    by_pagemap: HashMap<String, AddressSpace>,
}

impl ImageSpaces {
    /// From a stored checkpoint (its `mm-*.img` are kept inline); malformed ones are skipped.
    pub fn of(manifest: &Manifest) -> ImageSpaces {
        ImageSpaces::of_files(inline_files(manifest))
    }

    /// From a dump on disk; unreadable or malformed ones are skipped.
    pub fn of_dir(dir: &Path) -> ImageSpaces {
        let files = read_dir_files(dir, |name| pid_of_mm(name).is_some());
        ImageSpaces::of_files(files.iter().map(|(n, b)| (n.as_str(), b.as_slice())))
    }

    /// From (file name, bytes) pairs; files other than `mm-PID.img` are ignored.
    pub fn of_files<'a>(files: impl Iterator<Item = (&'a str, &'a [u8])>) -> ImageSpaces {
        let mut by_pagemap = HashMap::new();
        for (name, bytes) in files {
            let Some(pid) = pid_of_mm(name) else { continue };
            match AddressSpace::decode(bytes) {
                Ok(space) => {
                    by_pagemap.insert(format!("pagemap-{pid}.img"), space);
                }
                Err(e) => tracing::warn!(file = %name, error = %e, "skipping mm image"),
            }
        }
        ImageSpaces { by_pagemap }
    }

    /// The mapping of `pagemap`'s process that holds `vaddr`: the pagemap's name and the
    /// mapping's index.
    pub fn mapping_of(&self, pagemap: &str, vaddr: u64) -> Option<(&str, usize)> {
        let (name, space) = self.by_pagemap.get_key_value(pagemap)?;
        Some((name.as_str(), space.mapping_of(vaddr)?))
    }

    /// [`Self::mapping_of`] for the addresses of one pagemap's process, looked up once: the
    /// index of the mapping that holds an address, `None` outside every mapping (or for a
    /// pagemap without an address space here).
    pub fn mappings_of<'s>(&'s self, pagemap: &str) -> impl Fn(u64) -> Option<usize> + 's {
        let space = self.by_pagemap.get(pagemap);
        move |vaddr| space?.mapping_of(vaddr)
    }

    pub fn is_empty(&self) -> bool {
        self.by_pagemap.is_empty()
    }

    /// The move of this dump's pages to `to`, a dump of another process tree of the same
    /// program: the processes paired by pid order (the first pid with the first, as a tree
    /// started alike forks alike), each page by its place in its mapping.
    pub fn move_to<'a>(&'a self, to: &'a ImageSpaces) -> SpaceMove<'a> {
        let by_pid = |spaces: &'a ImageSpaces| {
            let mut pagemaps: Vec<(u64, &'a str)> = spaces
                .by_pagemap
                .keys()
                .filter_map(|p| Some((pid_of_pagemap(p)?, p.as_str())))
                .collect();
            pagemaps.sort();
            pagemaps.into_iter().map(|(_, p)| p)
        };
        SpaceMove {
            from: self,
            to,
            pagemaps: by_pid(self).zip(by_pid(to)).collect(),
        }
    }
}

/// Pages of one dump moved to their places in another ([`ImageSpaces::move_to`]).
pub struct SpaceMove<'a> {
    from: &'a ImageSpaces,
    to: &'a ImageSpaces,
    /// Each process's pagemap here → its counterpart's there.
    pagemaps: HashMap<&'a str, &'a str>,
}

impl<'a> SpaceMove<'a> {
    /// Where page `vaddr` of `pagemap` lies in the other dump: its pagemap and address.
    pub fn page(&self, pagemap: &str, vaddr: u64) -> Option<(&'a str, u64)> {
        let here = self.from.by_pagemap.get(pagemap)?.relative(vaddr)?;
        let there = *self.pagemaps.get(pagemap)?;
        let vaddr = self.to.by_pagemap.get(there)?.absolute(&here)?;
        Some((there, vaddr))
    }
}

/// The pid of `mm-PID.img`.
fn pid_of_mm(name: &str) -> Option<u64> {
    let pid = name.strip_prefix("mm-")?.strip_suffix(".img")?;
    pid.parse().ok()
}

fn pid_of_pagemap(name: &str) -> Option<u64> {
    is_process_pagemap(name)
        .then(|| {
            name.strip_prefix("pagemap-")?
                .strip_suffix(".img")?
                .parse()
                .ok()
        })
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::mm_image;

    const PRIVATE_ANON: u32 = MAP_PRIVATE | MAP_ANONYMOUS;
    const ANON: u32 = 1 | (1 << 9); // VMA_AREA_REGULAR | VMA_ANON_PRIVATE
    const HEAP: u32 = ANON | (1 << 5);
    const FILE: u32 = 1 | (1 << 6); // VMA_AREA_REGULAR | VMA_FILE_PRIVATE

    fn vma(start: u64, end: u64, flags: u32, status: u32, shmid: u64) -> Vma {
        Vma {
            start,
            end,
            pgoff: 0,
            shmid,
            prot: 3,
            flags,
            status,
        }
    }

    /// A program's mappings at `base` (its binary's file mapping, heap, two anonymous mappings, a
    /// stack), the heap `heap_pages` long.
    fn program_at(base: u64, mmap_base: u64, heap_pages: u64) -> Vec<Vma> {
        vec![
            vma(base, base + 0x2000, MAP_PRIVATE, FILE, 1),
            vma(
                base + 0x10000,
                base + 0x10000 + heap_pages * 0x1000,
                PRIVATE_ANON,
                HEAP,
                0,
            ),
            vma(mmap_base, mmap_base + 0x8000, PRIVATE_ANON, ANON, 0),
            vma(
                mmap_base + 0x20000,
                mmap_base + 0x40000,
                PRIVATE_ANON,
                ANON,
                0,
            ),
            vma(
                0x7ffd_0000_0000,
                0x7ffd_0002_1000,
                PRIVATE_ANON | MAP_GROWSDOWN,
                ANON,
                0,
            ),
        ]
    }

    #[test]
    fn an_mm_image_decodes_to_its_mappings_in_address_order() {
        let mut vmas = program_at(0x5555_0000_0000, 0x7f00_0000_0000, 4);
        vmas.reverse();
        let space = AddressSpace::decode(&mm_image(&vmas)).unwrap();
        vmas.reverse();
        assert_eq!(space.vmas(), vmas.as_slice());
    }

    #[test]
    fn a_page_is_found_at_its_place_in_a_process_moved_by_aslr() {
        let a = AddressSpace::new(program_at(0x5555_0000_0000, 0x7f00_0000_0000, 4));
        let b = AddressSpace::new(program_at(0x5601_2345_0000, 0x7f3a_0000_0000, 6));
        // The second anonymous mapping, 3 pages in.
        let rel = a.relative(0x7f00_0002_3000).unwrap();
        assert_eq!(b.absolute(&rel), Some(0x7f3a_0002_3000));
        // The heap, whatever its length, from its start; the stack from its end.
        let heap = a.relative(0x5555_0001_2000).unwrap();
        assert_eq!(b.absolute(&heap), Some(0x5601_2346_2000));
        let stack = a.relative(0x7ffd_0002_0000).unwrap();
        assert_eq!(b.absolute(&stack), Some(0x7ffd_0002_0000));
        // Outside every mapping, or past the end of the other's: nothing.
        assert!(a.relative(0x6000_0000_0000).is_none());
        let far_in_heap = b.relative(0x5601_2346_5000).unwrap();
        assert_eq!(a.absolute(&far_in_heap), None);
    }

    #[test]
    fn a_mapping_of_one_length_is_found_wherever_aslr_put_it() {
        // A 1 MiB arena: in one process below the other anonymous mappings, in the other
        // above them, so the how-manieth anonymous mapping it is differs.
        let arena = |at: u64| vma(at, at + 0x10_0000, PRIVATE_ANON, ANON, 0);
        let mut a = program_at(0x5555_0000_0000, 0x7f00_0000_0000, 4);
        a.push(arena(0x7e00_0000_0000));
        let mut b = program_at(0x5601_0000_0000, 0x7f3a_0000_0000, 4);
        b.push(arena(0x7f3b_0000_0000));
        let (a, b) = (AddressSpace::new(a), AddressSpace::new(b));
        let rel = a.relative(0x7e00_0008_0000).unwrap();
        assert_eq!(b.absolute(&rel), Some(0x7f3b_0008_0000));
    }

    #[test]
    fn an_anonymous_area_that_grew_downwards_keeps_its_pages_from_its_end() {
        // Mappings made top-down merged into one area; the other process made one more, below.
        let a = AddressSpace::new(vec![vma(
            0x7f00_0000_0000,
            0x7f00_0004_0000,
            PRIVATE_ANON,
            ANON,
            0,
        )]);
        let b = AddressSpace::new(vec![vma(
            0x7f3a_0000_0000,
            0x7f3a_0005_0000,
            PRIVATE_ANON,
            ANON,
            0,
        )]);
        let rel = a.relative(0x7f00_0003_f000).unwrap();
        assert_eq!(b.absolute(&rel), Some(0x7f3a_0004_f000));
        // Beyond the start of the smaller one: not there.
        let low = b.relative(0x7f3a_0000_0000).unwrap();
        assert_eq!(a.absolute(&low), None);
    }

    #[test]
    fn dumps_pair_their_processes_by_pid_order() {
        let a = ImageSpaces::of_files(
            [
                (
                    "mm-1.img",
                    mm_image(&program_at(0x5555_0000_0000, 0x7f00_0000_0000, 4)),
                ),
                (
                    "mm-7.img",
                    mm_image(&program_at(0x5555_0000_0000, 0x7e00_0000_0000, 4)),
                ),
                ("core-1.img", b"not an mm image".to_vec()),
            ]
            .iter()
            .map(|(n, b)| (*n, b.as_slice())),
        );
        let b = ImageSpaces::of_files(
            [
                (
                    "mm-12.img",
                    mm_image(&program_at(0x5601_0000_0000, 0x7f10_0000_0000, 4)),
                ),
                (
                    "mm-30.img",
                    mm_image(&program_at(0x5601_0000_0000, 0x7e10_0000_0000, 4)),
                ),
            ]
            .iter()
            .map(|(n, b)| (*n, b.as_slice())),
        );
        let moved = a.move_to(&b);
        assert_eq!(
            moved.page("pagemap-7.img", 0x7e00_0000_1000),
            Some(("pagemap-30.img", 0x7e10_0000_1000))
        );
        assert_eq!(
            moved.page("pagemap-1.img", 0x5555_0000_1000),
            Some(("pagemap-12.img", 0x5601_0000_1000))
        );
        assert_eq!(moved.page("pagemap-2.img", 0x5555_0000_1000), None);
    }

    #[test]
    fn bad_mm_images_are_errors_not_panics() {
        let good = mm_image(&program_at(0x5555_0000_0000, 0x7f00_0000_0000, 4));
        for cut in 0..good.len() {
            let _ = AddressSpace::decode(&good[..cut]);
        }
        let mut other_magic = good.clone();
        other_magic[4] ^= 1;
        assert!(matches!(
            AddressSpace::decode(&other_magic),
            Err(Error::NotMm(..))
        ));
        let backwards = mm_image(&[vma(0x2000, 0x1000, PRIVATE_ANON, ANON, 0)]);
        assert!(AddressSpace::decode(&backwards).is_err());
    }
}
