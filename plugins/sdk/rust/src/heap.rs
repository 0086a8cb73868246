//! The plugin's heap: a free list per power-of-two size class for small
//! blocks, over the standard wasm allocator (dlmalloc) for large ones.
//!
//! A plugin call is mostly small, short-lived allocations: the keys, strings
//! and map nodes of a parsed payload, freed before the call returns. Here an
//! allocation of up to [`MAX_SMALL`] bytes is a pop from its class's free
//! list and a free is a push, about a dozen instructions, where a
//! general-purpose allocator searches, splits and coalesces. Freed blocks
//! stay in their class for the next call. Blocks are carved from 64 KiB
//! slabs taken from [`System`]; memory is never handed back (a wasm memory
//! cannot shrink anyway), so a plugin's heap is as large as its busiest call
//! needed. Blocks above [`MAX_SMALL`] go to [`System`] directly.
//!
//! Plugins are single-threaded (`wasm32-wasip2` has no threads), so the free
//! lists need no locks: the SDK installs [`Heap`] only on wasm without the
//! `atomics` target feature, and elsewhere it is built for its tests alone.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ptr;
use std::alloc::System;

/// The largest block served from the free lists.
pub const MAX_SMALL: usize = 4096;
/// The smallest block: room for the free list's link.
const MIN_SMALL: usize = 8;
const CLASSES: usize = (MAX_SMALL.trailing_zeros() - MIN_SMALL.trailing_zeros() + 1) as usize;
/// New small blocks are carved from slabs of this size.
const SLAB: usize = 64 * 1024;

struct State {
    /// Per class, the first free block; a free block holds the next one's
    /// address in its first bytes.
    free: [*mut u8; CLASSES],
    /// The unused rest of the current slab, as addresses.
    next: usize,
    end: usize,
}

/// The allocator (see the module docs).
pub struct Heap {
    state: UnsafeCell<State>,
}

// SAFETY: only ever used from one thread: the SDK installs it on
// single-threaded wasm alone, and its tests use their own instances.
unsafe impl Sync for Heap {}

impl Heap {
    pub const fn new() -> Self {
        Heap {
            state: UnsafeCell::new(State {
                free: [ptr::null_mut(); CLASSES],
                next: 0,
                end: 0,
            }),
        }
    }
}

impl Default for Heap {
    fn default() -> Self {
        Self::new()
    }
}

/// The size class of `layout`, or `None` for a block of [`System`]'s. A
/// block of class `c` is `MIN_SMALL << c` bytes, aligned to its size, so it
/// meets any alignment up to its size.
#[inline]
fn class(layout: Layout) -> Option<usize> {
    let size = layout.size().max(layout.align()).max(MIN_SMALL);
    if size > MAX_SMALL {
        return None;
    }
    Some((size.next_power_of_two().trailing_zeros() - MIN_SMALL.trailing_zeros()) as usize)
}

impl State {
    /// A new block of `size` bytes (a power of two up to [`MAX_SMALL`]),
    /// aligned to its size: from the current slab, else a new slab, else
    /// (memory nearly full) a block of exactly that size from [`System`].
    /// Null when memory is exhausted.
    #[cold]
    fn carve(&mut self, size: usize) -> *mut u8 {
        // Before the first slab `end` is 0, so nothing fits.
        let start = self.next.checked_add(size - 1).map(|n| n & !(size - 1));
        if let Some(stop) = start
            .and_then(|s| s.checked_add(size))
            .filter(|&e| e <= self.end)
        {
            self.next = stop;
            return (stop - size) as *mut u8;
        }
        // SAFETY: non-zero sizes and power-of-two alignments.
        let slab = unsafe { System.alloc(Layout::from_size_align_unchecked(SLAB, MAX_SMALL)) };
        if slab.is_null() {
            // SAFETY: as above.
            return unsafe { System.alloc(Layout::from_size_align_unchecked(size, size)) };
        }
        self.next = slab as usize + size;
        self.end = slab as usize + SLAB;
        slab
    }
}

unsafe impl GlobalAlloc for Heap {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(c) = class(layout) else {
            // SAFETY: the caller's layout, under GlobalAlloc's contract.
            return unsafe { System.alloc(layout) };
        };
        // SAFETY: one thread (see `Sync` above), and no other reference to
        // the state lives across this call.
        let state = unsafe { &mut *self.state.get() };
        let head = state.free[c];
        if head.is_null() {
            return state.carve(MIN_SMALL << c);
        }
        // SAFETY: a free block holds the next free block's address.
        state.free[c] = unsafe { head.cast::<*mut u8>().read() };
        head
    }

    #[inline]
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        let Some(c) = class(layout) else {
            // SAFETY: blocks of this layout came from System.
            return unsafe { System.dealloc(p, layout) };
        };
        // SAFETY: as in `alloc`; `p` is a block of class `c`, so at least
        // 8 bytes long and 8-byte aligned, and no longer in use.
        unsafe {
            let state = &mut *self.state.get();
            p.cast::<*mut u8>().write(state.free[c]);
            state.free[c] = p;
        }
    }

    #[inline]
    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees that `new_size` with this alignment
        // is a valid layout.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (class(layout), class(new)) {
            // The block it has still fits, and no smaller class would do.
            (Some(a), Some(b)) if a == b => p,
            // SAFETY: both System's, under the caller's guarantees.
            (None, None) => unsafe { System.realloc(p, layout, new_size) },
            // SAFETY: a fresh block of the new layout gets the bytes that
            // fit, then the old block is freed.
            _ => unsafe {
                let q = self.alloc(new);
                if !q.is_null() {
                    ptr::copy_nonoverlapping(p, q, layout.size().min(new_size));
                    self.dealloc(p, layout);
                }
                q
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic generator, so a failure repeats.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> usize {
            (self.next() % n) as usize
        }
    }

    struct Block {
        p: *mut u8,
        layout: Layout,
        fill: u8,
    }

    fn check(b: &Block) {
        // SAFETY: a live block of `layout.size()` bytes.
        let bytes = unsafe { core::slice::from_raw_parts(b.p, b.layout.size()) };
        assert!(
            bytes.iter().all(|&x| x == b.fill),
            "block {:p} was overwritten",
            b.p
        );
    }

    fn fill(b: &Block) {
        // SAFETY: as in `check`.
        unsafe { ptr::write_bytes(b.p, b.fill, b.layout.size()) };
    }

    #[test]
    fn classes_cover_size_and_alignment() {
        let class_of = |size, align| class(Layout::from_size_align(size, align).unwrap());
        assert_eq!(class_of(0, 1), Some(0));
        assert_eq!(class_of(8, 8), Some(0));
        assert_eq!(class_of(9, 1), Some(1));
        assert_eq!(class_of(3, 64), Some(3), "alignment raises the class");
        assert_eq!(class_of(MAX_SMALL, 1), Some(CLASSES - 1));
        assert_eq!(class_of(MAX_SMALL + 1, 1), None);
        assert_eq!(class_of(8, 2 * MAX_SMALL), None);
    }

    #[test]
    fn freed_blocks_are_reused_in_their_class() {
        let heap = Heap::new();
        let small = Layout::from_size_align(24, 8).unwrap();
        // SAFETY: allocations and frees of matching layouts.
        unsafe {
            let a = heap.alloc(small);
            let b = heap.alloc(small);
            assert!(!a.is_null() && !b.is_null() && a != b);
            heap.dealloc(a, small);
            // Same class (17..=32 bytes): the freed block comes back.
            assert_eq!(heap.alloc(Layout::from_size_align(32, 1).unwrap()), a);
            heap.dealloc(a, small);
            heap.dealloc(b, small);
        }
    }

    #[test]
    fn realloc_keeps_contents_across_classes_and_into_system() {
        let heap = Heap::new();
        let mut layout = Layout::from_size_align(5, 1).unwrap();
        // SAFETY: each realloc is given the block's current layout.
        unsafe {
            let mut p = heap.alloc(layout);
            ptr::copy_nonoverlapping(b"hello".as_ptr(), p, 5);
            for size in [6, 8, 100, 4096, 5000, 70_000, 3000, 7] {
                p = heap.realloc(p, layout, size);
                assert!(!p.is_null());
                layout = Layout::from_size_align(size, 1).unwrap();
                assert_eq!(core::slice::from_raw_parts(p, 5), b"hello", "after {size}");
            }
            heap.dealloc(p, layout);
        }
    }

    /// Random allocations, frees and reallocations of random sizes and
    /// alignments: every block is aligned, and no block overwrites another
    /// (each is filled with its own byte and checked before it is freed).
    #[test]
    fn random_use_never_overlaps_or_misaligns() {
        let heap = Heap::new();
        let mut rng = Rng(0x5eed_1234_abcd_ef01);
        let mut live: Vec<Block> = Vec::new();
        for step in 0..40_000u32 {
            match rng.below(10) {
                0..=4 => {
                    let size = match rng.below(8) {
                        0 => rng.below(3 * MAX_SMALL as u64),
                        _ => rng.below(300),
                    };
                    let align = 1 << rng.below(8);
                    let layout = Layout::from_size_align(size, align).unwrap();
                    // SAFETY: a valid layout.
                    let p = unsafe { heap.alloc(layout) };
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "step {step}: misaligned");
                    let b = Block {
                        p,
                        layout,
                        fill: step as u8,
                    };
                    fill(&b);
                    live.push(b);
                }
                5..=7 if !live.is_empty() => {
                    let b = live.swap_remove(rng.below(live.len() as u64));
                    check(&b);
                    // SAFETY: a live block with its own layout.
                    unsafe { heap.dealloc(b.p, b.layout) };
                }
                _ if !live.is_empty() => {
                    let i = rng.below(live.len() as u64);
                    check(&live[i]);
                    let new_size = rng.below(2 * MAX_SMALL as u64);
                    let b = &mut live[i];
                    // SAFETY: a live block with its own layout.
                    let p = unsafe { heap.realloc(b.p, b.layout, new_size) };
                    assert!(!p.is_null());
                    let kept = b.layout.size().min(new_size);
                    // SAFETY: the first `kept` bytes were carried over.
                    let bytes = unsafe { core::slice::from_raw_parts(p, kept) };
                    assert!(
                        bytes.iter().all(|&x| x == b.fill),
                        "step {step}: realloc lost bytes"
                    );
                    b.p = p;
                    b.layout = Layout::from_size_align(new_size, b.layout.align()).unwrap();
                    b.fill = step as u8;
                    fill(b);
                }
                _ => {}
            }
        }
        for b in live {
            check(&b);
            // SAFETY: a live block with its own layout.
            unsafe { heap.dealloc(b.p, b.layout) };
        }
    }
}
