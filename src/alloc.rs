//! The process's allocator: the system's, except that a block of [`MAPPED_FROM`] bytes or more is
//! a mapping of its own, made when it is allocated and unmapped when it is freed.
//!
//! **Why.** Every FUSE mount of a lazy swap-in allocates a zeroed 16 MiB request buffer for its
//! handshake and one per FUSE thread (`fuser`'s size for the largest write the kernel may send;
//! a read-only image never gets one). glibc's malloc serves such a block from its heap whenever
//! a free region there is large enough, and then clears it, faulting in all 4096 of its pages
//! (the worker hands its freed heap back after each swap-out, `worker::host_memory::give_back`,
//! and on a VM that returns free memory to its host, each such page costs the host's fault
//! too): 8-13 ms of most mounts, on the swap-in's critical path (0.2-0.3 ms when the block was
//! mapped fresh), ~10 ms more CPU for the threads' buffers beside the restore, and those 64 MiB
//! resident for as long as the image stays mounted. A fresh mapping is zero already, and only
//! the pages a request touches are faulted in. `M_MMAP_THRESHOLD` does not do it: glibc applies
//! it only when its heap must grow.
//!
//! Smaller blocks, and blocks aligned beyond a page, are the system allocator's, so where a block
//! lives follows from its layout alone, which `dealloc` and `realloc` are given.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr;

/// Blocks of this size or more are mappings of their own (fuser's request buffers are 16 MiB
/// plus a page).
pub const MAPPED_FROM: usize = 16 << 20;

/// The alignment a fresh mapping always has.
const PAGE: usize = 4096;

/// See the module documentation.
pub struct LargeMapped;

/// Whether a block of `size` bytes aligned to `align` is a mapping of its own.
fn mapped(size: usize, align: usize) -> bool {
    size >= MAPPED_FROM && align <= PAGE
}

/// `size` rounded up to whole pages (the length a block's mapping has).
fn mapping_len(size: usize) -> usize {
    size.next_multiple_of(PAGE)
}

/// A fresh private mapping of `size` bytes (zero), or null.
unsafe fn map(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping at an address of the kernel's choosing.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            mapping_len(size),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        p.cast()
    }
}

unsafe impl GlobalAlloc for LargeMapped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if mapped(layout.size(), layout.align()) {
            // SAFETY: see `map`.
            unsafe { map(layout.size()) }
        } else {
            // SAFETY: the caller's contract, passed on.
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if mapped(layout.size(), layout.align()) {
            // SAFETY: see `map`; a fresh mapping is zero.
            unsafe { map(layout.size()) }
        } else {
            // SAFETY: the caller's contract, passed on.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if mapped(layout.size(), layout.align()) {
            // SAFETY: `ptr` is the mapping `alloc` made for this layout, of this length.
            unsafe { libc::munmap(ptr.cast(), mapping_len(layout.size())) };
        } else {
            // SAFETY: the caller's contract, passed on.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let align = layout.align();
        match (mapped(layout.size(), align), mapped(new_size, align)) {
            (false, false) => {
                // SAFETY: the caller's contract, passed on.
                unsafe { System.realloc(ptr, layout, new_size) }
            }
            (true, true) => {
                // SAFETY: `ptr` is a mapping of the old length; the kernel moves its pages if it
                // must, without copying them.
                let p = unsafe {
                    libc::mremap(
                        ptr.cast(),
                        mapping_len(layout.size()),
                        mapping_len(new_size),
                        libc::MREMAP_MAYMOVE,
                    )
                };
                if p == libc::MAP_FAILED {
                    ptr::null_mut()
                } else {
                    p.cast()
                }
            }
            (_, _) => {
                // Across the threshold: a new block, the bytes copied, the old one freed (left
                // as it was if the new one cannot be had).
                // SAFETY: `new_size` is non-zero and, rounded to `align`, does not overflow
                // (the caller's contract for `realloc`).
                let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, align) };
                // SAFETY: a valid non-zero layout.
                let p = unsafe { self.alloc(new_layout) };
                if !p.is_null() {
                    // SAFETY: both blocks hold at least the bytes copied, and do not overlap.
                    unsafe {
                        ptr::copy_nonoverlapping(ptr, p, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                }
                p
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize) -> Layout {
        Layout::from_size_align(size, 8).unwrap()
    }

    #[test]
    fn a_large_zeroed_block_is_a_fresh_mapping_and_zero() {
        let a = LargeMapped;
        let l = layout(MAPPED_FROM + PAGE);
        unsafe {
            let p = a.alloc_zeroed(l);
            assert!(!p.is_null());
            assert_eq!(p as usize % PAGE, 0, "a mapping starts on a page");
            let bytes = std::slice::from_raw_parts_mut(p, l.size());
            assert!(bytes.iter().all(|&b| b == 0));
            bytes[l.size() - 1] = 7;
            a.dealloc(p, l);
        }
    }

    #[test]
    fn a_block_keeps_its_bytes_when_it_grows_and_shrinks_across_the_threshold() {
        let a = LargeMapped;
        let small = MAPPED_FROM / 2;
        unsafe {
            let p = a.alloc(layout(small));
            assert!(!p.is_null());
            for i in 0..small {
                *p.add(i) = (i % 251) as u8;
            }
            // Up: from the heap to a mapping; then a larger mapping; then down to the heap.
            let p = a.realloc(p, layout(small), MAPPED_FROM + 1);
            assert!(!p.is_null());
            let p = a.realloc(p, layout(MAPPED_FROM + 1), 3 * MAPPED_FROM);
            assert!(!p.is_null());
            let p = a.realloc(p, layout(3 * MAPPED_FROM), small - 1);
            assert!(!p.is_null());
            assert!((0..small - 1).all(|i| *p.add(i) == (i % 251) as u8));
            a.dealloc(p, layout(small - 1));
        }
    }

    #[test]
    fn where_a_block_lives_follows_from_its_layout() {
        assert!(mapped(MAPPED_FROM, 8));
        assert!(mapped(MAPPED_FROM, PAGE));
        assert!(!mapped(MAPPED_FROM - 1, 8));
        assert!(
            !mapped(MAPPED_FROM, 2 * PAGE),
            "over-aligned blocks stay the system's"
        );
        assert_eq!(mapping_len(MAPPED_FROM + 1), MAPPED_FROM + PAGE);
    }

    #[test]
    fn the_binarys_large_vectors_are_mappings_of_their_own() {
        // This test binary runs on `LargeMapped` too (it is `main.rs`'s global allocator):
        // glibc's own blocks start 16 bytes into a page, a mapping on the page.
        let v: Vec<u8> = vec![0; MAPPED_FROM + PAGE];
        assert_eq!(v.as_ptr() as usize % PAGE, 0);
        assert!(v.iter().all(|&b| b == 0));
    }
}
