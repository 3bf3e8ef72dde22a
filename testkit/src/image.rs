//! Synthetic checkpoint directories: shaped like a CRIU image dir (page files with zero and data
//! pages, small metadata files), deterministic from a seed, cheap to make.

use std::path::Path;

pub const PAGE: usize = 4096;

/// Deterministic pseudo-random bytes (xorshift), so tests need no extra crates.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e3779b97f4a7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
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

/// Writes `pages-1.img` from `(kind, seed)` pairs, plus `core-1.img` and `pagemap-1.img`.
pub fn write_image_dir(dir: &Path, pages: &[(u8, u64)], meta_seed: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let data: Vec<u8> = pages.iter().flat_map(|&(k, s)| page(k, s)).collect();
    std::fs::write(dir.join("pages-1.img"), data).unwrap();
    std::fs::write(dir.join("core-1.img"), noise(meta_seed, 1234)).unwrap();
    std::fs::write(dir.join("pagemap-1.img"), noise(meta_seed + 1, 100)).unwrap();
}

/// A typical mix: every 4th page zero, the rest half text, half noise; `seed` shifts content.
pub fn mixed_pages(n: usize, seed: u64) -> Vec<(u8, u64)> {
    (0..n as u64)
        .map(|i| match i % 4 {
            0 => (0, 0),
            1 | 2 => (1, seed * 1_000_000 + i),
            _ => (2, seed * 1_000_000 + i),
        })
        .collect()
}

/// Asserts that every file of `a` exists in `b` with the same bytes, and vice versa.
pub fn assert_same_dir(a: &Path, b: &Path) {
    let names = |d: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(a), names(b), "file lists differ");
    for name in names(a) {
        let (x, y) = (
            std::fs::read(a.join(&name)).unwrap(),
            std::fs::read(b.join(&name)).unwrap(),
        );
        assert!(x == y, "{name} differs ({} vs {} bytes)", x.len(), y.len());
    }
}
