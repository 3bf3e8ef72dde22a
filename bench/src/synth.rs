//! Synthetic memory images: CRIU-shaped image directories (page files and small metadata files)
//! and raw page files whose bytes come from a seed, so that benchmarks and tests need neither
//! CRIU nor stored fixtures, and every run sees the same bytes.
//!
//! The one home of these generators: `pico bench store` ingests [`checkpoint_dir`], `pico bench
//! nbd` serves [`sparse_image`], and the tests reach all of them through `testkit` (which
//! re-exports them, so the shipped binary never links test helpers). One generator of
//! pseudo-random bytes, [`Rng`], feeds four page shapes, each for a job the others do not do:
//!
//! - [`page_file`]: the store's mix (1 in 8 pages zero, 1 in 5 a repeat of an earlier page, half
//!   of the rest text-like, the others random). Distinct seeds give (almost) disjoint pages, so
//!   checkpoints made of shared parts ([`checkpoint_of_parts`]) share exactly those parts' pages.
//! - [`page`] and [`mixed_pages`]: pages named one by one as (kind, seed), for tests that decide
//!   page by page what two images share ([`kinds_image_dir`]).
//! - [`zero_run_page_file`]: runs of zero and data pages of varied lengths, like the stacks and
//!   heaps of a dump, so that an NBD export has holes to report ([`zero_run_image_dir`]).
//! - [`sparse_image`]: a raw image with few zero pages (a CRIU dump leaves most out itself), the
//!   NBD benchmark's default input.

use std::path::{Path, PathBuf};

use pagestore::PAGE_SIZE;

/// The page size of every generated file.
pub const PAGE: usize = PAGE_SIZE;

/// A deterministic xorshift64 generator (no dependency, reproducible by seed).
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`; nearby seeds give unrelated sequences.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// A generator that starts from `state` itself (made odd: xorshift stays at zero forever).
    pub fn from_state(state: u64) -> Rng {
        Rng(state | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value in `0..n` (`0` when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Fills `buf` with the next values, little-endian, 8 bytes each.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// `len` pseudo-random bytes for `seed`, one per step of [`Rng`].
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

/// Creates `dir` and writes `files` (name, bytes) into it.
pub fn write_files(dir: &Path, files: &[(&str, &[u8])]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes)?;
    }
    Ok(())
}

/// `pages` pages of the store's mix: every 8th zero, every 5th a copy of an earlier page, half of
/// the rest compressible text-like, the others random. Distinct seeds give (almost) disjoint
/// pages.
pub fn page_file(seed: u64, pages: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut data = vec![0u8; pages * PAGE];
    for i in 0..pages {
        let (done, rest) = data.split_at_mut(i * PAGE);
        let page = &mut rest[..PAGE];
        if i % 8 == 7 {
            continue;
        } else if i % 5 == 4 && i > 0 {
            let j = (rng.next_u64() as usize) % i;
            page.copy_from_slice(&done[j * PAGE..(j + 1) * PAGE]);
        } else if i % 2 == 0 {
            let word = rng.next_u64().to_le_bytes();
            for (k, b) in page.iter_mut().enumerate() {
                *b = if k % 64 < 8 {
                    word[k % 8]
                } else {
                    b'a' + (k % 23) as u8
                };
            }
        } else {
            rng.fill(page);
        }
    }
    data
}

/// Writes a CRIU-like image directory: `pages-1.img` (from [`page_file`]) and `core-1.img`.
pub fn checkpoint_dir(dir: &Path, seed: u64, pages: usize) -> std::io::Result<()> {
    let core = format!("core of seed {seed}\n");
    write_files(
        dir,
        &[
            ("pages-1.img", &page_file(seed, pages)),
            ("core-1.img", core.as_bytes()),
        ],
    )
}

/// Writes a CRIU-like image directory whose `pages-1.img` is the [`page_file`]s of `parts`
/// (seed, pages) one after another, so that checkpoints made of shared parts share pages.
pub fn checkpoint_of_parts(dir: &Path, parts: &[(u64, usize)]) -> std::io::Result<PathBuf> {
    let data: Vec<u8> = parts
        .iter()
        .flat_map(|&(seed, pages)| page_file(seed, pages))
        .collect();
    let core = format!("{parts:?}");
    write_files(
        dir,
        &[("pages-1.img", &data), ("core-1.img", core.as_bytes())],
    )?;
    Ok(dir.to_path_buf())
}

/// One page: `kind` 0 = zero, 1 = compressible text-like, 2 = incompressible.
pub fn page(kind: u8, seed: u64) -> Vec<u8> {
    match kind {
        0 => vec![0; PAGE],
        1 => format!("page {seed} ")
            .into_bytes()
            .into_iter()
            .cycle()
            .take(PAGE)
            .collect(),
        _ => noise(seed, PAGE),
    }
}

/// A typical mix of [`page`]s: every 4th page zero, the rest half text, half noise; `seed`
/// shifts content.
pub fn mixed_pages(n: usize, seed: u64) -> Vec<(u8, u64)> {
    (0..n as u64)
        .map(|i| match i % 4 {
            0 => (0, 0),
            1 | 2 => (1, seed * 1_000_000 + i),
            _ => (2, seed * 1_000_000 + i),
        })
        .collect()
}

/// Writes `pages-1.img` from [`page`]s given as `(kind, seed)` pairs, plus `core-1.img` and
/// `pagemap-1.img` of noise from `meta_seed`.
pub fn kinds_image_dir(dir: &Path, pages: &[(u8, u64)], meta_seed: u64) -> std::io::Result<()> {
    let data: Vec<u8> = pages.iter().flat_map(|&(k, s)| page(k, s)).collect();
    write_files(
        dir,
        &[
            ("pages-1.img", &data),
            ("core-1.img", &noise(meta_seed, 1234)),
            ("pagemap-1.img", &noise(meta_seed + 1, 100)),
        ],
    )
}

/// Whether page `i` of a [`zero_run_page_file`] is all zeros: runs of data and zero pages of
/// varied lengths, like the stacks and heaps of a real dump.
pub fn is_zero_page(i: usize) -> bool {
    matches!(i % 16, 3 | 4 | 5 | 9) || (i / 64) % 4 == 3
}

/// The bytes of data page `i` of a [`zero_run_page_file`] (pseudo-random, and some repeat to
/// exercise dedup).
pub fn data_page(i: usize) -> Vec<u8> {
    let seed = if i.is_multiple_of(13) {
        1
    } else {
        i as u64 + 1
    };
    let mut page = vec![0u8; PAGE];
    Rng::new(seed).fill(&mut page);
    // Mostly-text tail, compressible like real heap data.
    page[2048..3072].fill(b'a' + (i % 26) as u8);
    page
}

/// A page file of `pages` pages with runs of zero pages ([`is_zero_page`], [`data_page`]).
pub fn zero_run_page_file(pages: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(pages * PAGE);
    for i in 0..pages {
        if is_zero_page(i) {
            out.extend_from_slice(&[0u8; PAGE]);
        } else {
            out.extend_from_slice(&data_page(i));
        }
    }
    out
}

/// Writes a CRIU-like image directory: `pages-1.img`, a [`zero_run_page_file`] of `pages` pages,
/// a small `pages-2.img`, and small inline files. Returns the bytes of `pages-1.img`.
pub fn zero_run_image_dir(dir: &Path, pages: usize) -> std::io::Result<Vec<u8>> {
    let data = zero_run_page_file(pages);
    write_files(
        dir,
        &[
            ("pages-1.img", &data),
            ("pages-2.img", &zero_run_page_file(3)),
            ("pagemap-1.img", b"\x19\x43\x56\x54pagemap"),
            ("core-1.img", b"core"),
        ],
    )?;
    Ok(data)
}

/// A raw memory image of `bytes` bytes: pseudo-random, partly compressible data pages, every
/// 50th page zero (~2%, like a CRIU dump, which leaves out most zero pages itself).
pub fn sparse_image(bytes: usize) -> Vec<u8> {
    let mut out = vec![0u8; bytes];
    let mut rng = Rng::from_state(0x2545_f491_4f6c_dd1d);
    for (i, page) in out.chunks_mut(PAGE).enumerate() {
        if i % 50 == 7 {
            continue;
        }
        rng.fill(page);
        page[PAGE / 2..].fill((i % 251) as u8);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// FNV-1a, to compare generated bytes with the ones recorded below.
    fn fnv(bytes: &[u8]) -> u64 {
        bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        })
    }

    /// Tests and benchmark results were made with these bytes: a change would move every figure
    /// measured on them. Recorded from the generators before they found one home here.
    #[test]
    fn generators_keep_their_bytes() {
        assert_eq!(Rng::new(1).next_u64(), 0xdc1b_77ae_0bf3_4dad);
        assert_eq!(fnv(&page_file(42, 300)), 0x8019_78f9_6f5d_763f);
        assert_eq!(fnv(&noise(5, 10_000)), 0x8cd5_bd16_c847_3450);
        assert_eq!(fnv(&zero_run_page_file(300)), 0x539b_7b1b_dd8f_148e);
        assert_eq!(fnv(&sparse_image(1 << 20)), 0xceca_4b42_c0d4_4532);
    }

    #[test]
    fn page_shapes() {
        let mix = page_file(3, 40);
        assert!(mix[7 * PAGE..8 * PAGE].iter().all(|&b| b == 0));
        let file = zero_run_page_file(64);
        for i in 0..64 {
            let p = &file[i * PAGE..(i + 1) * PAGE];
            assert_eq!(p.iter().all(|&b| b == 0), is_zero_page(i), "page {i}");
        }
        assert_eq!(page(0, 9), vec![0; PAGE]);
        assert_eq!(mixed_pages(4, 1)[0], (0, 0));
    }
}
