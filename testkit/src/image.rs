//! Synthetic checkpoint directories: shaped like a CRIU image dir (page files with zero and data
//! pages, small metadata files), deterministic from a seed, cheap to make. The pages are named
//! one by one as (kind, seed); their generator's home is `bench::synth`.

use std::path::Path;

pub use bench::synth::{mixed_pages, noise, page, PAGE};

/// Writes `pages-1.img` from `(kind, seed)` pairs, plus `core-1.img` and `pagemap-1.img`.
pub fn write_image_dir(dir: &Path, pages: &[(u8, u64)], meta_seed: u64) {
    bench::synth::kinds_image_dir(dir, pages, meta_seed).unwrap();
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
