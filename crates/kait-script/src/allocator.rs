//! The memory of one script's runtime, kept apart so that it all goes when the runtime goes.
//!
//! QuickJS frees everything it allocated when its runtime is freed, except where one of its
//! own error paths loses a reference: fuzzing found a string left behind when `JSON.parse`
//! ran out of memory under the runtime's limit (SECURITY.md). User code could hit such a path
//! on every call and grow the process without bound. This allocator records every live block
//! of its runtime and frees what is left when the runtime is dropped, so whatever QuickJS
//! loses lives no longer than the script.
//!
//! Written by hand (a set of live addresses over the C allocator) because the bookkeeping
//! has to see QuickJS's own calls; `usable_size` has no `self` in rquickjs's interface, so
//! blocks come from `malloc` and their size from `malloc_usable_size`.

use std::collections::HashSet;

use rquickjs::allocator::Allocator;

#[derive(Default)]
pub struct ContainedAllocator {
    live: HashSet<usize>,
}

impl ContainedAllocator {
    fn track(&mut self, block: *mut u8) -> *mut u8 {
        if !block.is_null() {
            self.live.insert(block as usize);
        }
        block
    }
}

// SAFETY: every block comes from the C allocator (aligned for any type, so to `usize`), is
// returned to it exactly once (by `dealloc`, `realloc` or `drop`), and its usable size is
// the C allocator's own answer.
unsafe impl Allocator for ContainedAllocator {
    fn alloc(&mut self, size: usize) -> *mut u8 {
        // SAFETY: `malloc` takes any size.
        let block = unsafe { libc::malloc(size.max(1)) }.cast::<u8>();
        self.track(block)
    }

    fn calloc(&mut self, count: usize, size: usize) -> *mut u8 {
        // SAFETY: `calloc` checks `count * size` for overflow itself.
        let block = unsafe { libc::calloc(count.max(1), size.max(1)) }.cast::<u8>();
        self.track(block)
    }

    unsafe fn dealloc(&mut self, ptr: *mut u8) {
        if self.live.remove(&(ptr as usize)) {
            // SAFETY: a live block of ours.
            unsafe { libc::free(ptr.cast()) };
        }
    }

    unsafe fn realloc(&mut self, ptr: *mut u8, new_size: usize) -> *mut u8 {
        if ptr.is_null() {
            return self.alloc(new_size);
        }
        // SAFETY: the caller gives a live block of this allocator.
        let moved = unsafe { libc::realloc(ptr.cast(), new_size.max(1)) }.cast::<u8>();
        if !moved.is_null() {
            self.live.remove(&(ptr as usize));
            self.live.insert(moved as usize);
        }
        moved
    }

    unsafe fn usable_size(ptr: *mut u8) -> usize {
        // SAFETY: the caller gives a live block, which came from `malloc`.
        unsafe { libc::malloc_usable_size(ptr.cast()) }
    }
}

impl Drop for ContainedAllocator {
    fn drop(&mut self) {
        // The runtime is gone: what is still here was lost by it.
        for block in self.live.drain() {
            // SAFETY: live blocks of ours, each freed once.
            unsafe { libc::free(block as *mut libc::c_void) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_tracked_through_realloc_and_freed_once() {
        let mut allocator = ContainedAllocator::default();
        let a = allocator.alloc(10);
        let b = allocator.calloc(4, 8);
        // SAFETY: live blocks of this allocator.
        let a = unsafe { allocator.realloc(a, 4096) };
        assert!(unsafe { ContainedAllocator::usable_size(a) } >= 4096);
        assert_eq!(allocator.live.len(), 2);
        unsafe { allocator.dealloc(b) };
        // A second free of the same block is ignored, not a double free.
        unsafe { allocator.dealloc(b) };
        assert_eq!(allocator.live.len(), 1);
        // `a` is left for `drop` to free.
    }
}
