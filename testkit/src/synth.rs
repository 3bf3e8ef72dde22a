//! Synthetic checkpoint directories: page files with a known mix of zero, repeated, compressible and
//! random pages, plus a small inline file, so store tests need no CRIU.

use std::path::{Path, PathBuf};

pub const PAGE: usize = 4096;

/// A deterministic xorshift generator (no dependency, reproducible by seed).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// `pages` pages: every 8th zero, every 5th a copy of an earlier page, half of the rest
/// compressible text-like, the others random. Distinct seeds give (almost) disjoint pages.
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
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("pages-1.img"), page_file(seed, pages))?;
    std::fs::write(dir.join("core-1.img"), format!("core of seed {seed}\n"))?;
    Ok(())
}

/// Writes a CRIU-like image directory whose `pages-1.img` is the [`page_file`]s of `parts`
/// (seed, pages) one after another, so that checkpoints made of shared parts share pages.
pub fn checkpoint_of_parts(dir: &Path, parts: &[(u64, usize)]) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let data: Vec<u8> = parts
        .iter()
        .flat_map(|&(seed, pages)| page_file(seed, pages))
        .collect();
    std::fs::write(dir.join("pages-1.img"), data)?;
    std::fs::write(dir.join("core-1.img"), format!("{parts:?}"))?;
    Ok(dir.to_path_buf())
}

/// Whether two directories hold the same file names with the same bytes.
pub fn same_files(a: &Path, b: &Path) -> std::io::Result<bool> {
    let names = |d: &Path| -> std::io::Result<Vec<String>> {
        let mut v: Vec<String> = std::fs::read_dir(d)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()?;
        v.sort();
        Ok(v)
    };
    let (na, nb) = (names(a)?, names(b)?);
    if na != nb {
        return Ok(false);
    }
    for n in na {
        if std::fs::read(a.join(&n))? != std::fs::read(b.join(&n))? {
            return Ok(false);
        }
    }
    Ok(true)
}
