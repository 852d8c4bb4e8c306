//! The heap allocator the `gateway` binary (and `examples/bare_proxy.rs`, to compare like with
//! like) installs: mimalloc, asked for a plain block whenever Rust's alignment is one every
//! mimalloc block already has.
//!
//! The `mimalloc` crate passes every allocation to mimalloc's aligned entry points. In mimalloc
//! 3 those take the plain path only for a small block whose free list happens to start at the
//! alignment; anything else (a 4 KiB head buffer, a boxed request future, a block from an empty
//! page) goes through the aligned fallback, which over-allocates unless the block's size class
//! is a power of two: ~18 of the ~62 allocations of a proxied request did, ~180 instructions
//! each (`benches/load/instructions.sh`). Every mimalloc block is aligned to at least a word
//! (its size classes are whole words), so a layout aligned to 8 bytes or less is asked for with
//! `mi_malloc`, `mi_zalloc` and `mi_realloc`; a larger alignment (tokio's cache-padded task
//! cells, say) still goes to the aligned entry points. Blocks of either kind are freed with
//! `mi_free`.
use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment every mimalloc block has: one word.
const WORD: usize = std::mem::size_of::<usize>();

/// mimalloc as the global allocator: see the module's comment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mimalloc;

// SAFETY: every block comes from mimalloc with at least the layout's size and alignment (a
// word-aligned one from the plain entry points, any other from the aligned ones), and goes back
// to it through `mi_free`, which takes blocks of both kinds.
unsafe impl GlobalAlloc for Mimalloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            mi::mi_malloc(layout.size()).cast()
        } else {
            mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            mi::mi_zalloc(layout.size()).cast()
        } else {
            mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi::mi_free(ptr.cast::<c_void>());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= WORD {
            mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
        } else {
            mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the `len` bytes at `ptr` are all `byte`.
    ///
    /// # Safety
    /// `ptr` must point to `len` initialised bytes.
    unsafe fn filled(ptr: *const u8, len: usize, byte: u8) -> bool {
        std::slice::from_raw_parts(ptr, len)
            .iter()
            .all(|&b| b == byte)
    }

    /// Every size class from a byte to past mimalloc's small and medium blocks, at every
    /// alignment from 1 to a page: each block is aligned, zeroed when asked, and keeps its bytes
    /// when it grows or shrinks.
    #[test]
    fn blocks_have_their_layouts_alignment_and_keep_their_bytes() {
        let sizes = (1..=64).chain([100, 1000, 1500, 4096, 5000, 70_000, 1 << 20]);
        for size in sizes {
            for align in (0..=12).map(|shift| 1usize << shift) {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: a non-zero size; each block is freed once with its own layout.
                unsafe {
                    let zeroed = Mimalloc.alloc_zeroed(layout);
                    assert!(!zeroed.is_null());
                    assert_eq!(zeroed as usize % align, 0, "size {size}, align {align}");
                    assert!(filled(zeroed, size, 0));
                    Mimalloc.dealloc(zeroed, layout);

                    let block = Mimalloc.alloc(layout);
                    assert_eq!(block as usize % align, 0, "size {size}, align {align}");
                    block.write_bytes(0xA5, size);
                    let grown = Mimalloc.realloc(block, layout, size * 3);
                    assert_eq!(grown as usize % align, 0, "size {size}, align {align}");
                    assert!(filled(grown, size, 0xA5));
                    let grown_layout = Layout::from_size_align(size * 3, align).unwrap();
                    let half = size.div_ceil(2);
                    let shrunk = Mimalloc.realloc(grown, grown_layout, half);
                    assert_eq!(shrunk as usize % align, 0, "size {size}, align {align}");
                    assert!(filled(shrunk, half, 0xA5));
                    Mimalloc.dealloc(shrunk, Layout::from_size_align(half, align).unwrap());
                }
            }
        }
    }
}
