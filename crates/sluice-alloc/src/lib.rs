//! The process's memory for `/metrics`: its resident set ([`resident_bytes`]) and the
//! heap bytes the program holds ([`allocated_bytes`]).
//!
//! [`Counting`] wraps the real global allocator
//! and keeps a running total of bytes allocated and not yet freed. `/metrics` shows it
//! beside the resident set, so that a growing resident set can be told apart: a growing
//! count is memory some owner keeps (a leak, or a cache without a bound), a flat count is
//! memory the allocator keeps for reuse (fragmentation).
//!
//! The count must cost almost nothing, as every allocation pays it. Each thread adds to a
//! thread-local balance and moves it into the shared total only when it passes
//! [`FLUSH_BYTES`], so the shared atomic is touched about once per 64 KiB of net change,
//! not once per allocation. The price: the total is off by up to `FLUSH_BYTES` per
//! thread, and a thread that exits takes its unflushed balance (under `FLUSH_BYTES`,
//! either sign) with it.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

/// A thread's balance moves into the shared total once it reaches this many bytes.
pub const FLUSH_BYTES: i64 = 64 << 10;

static ALLOCATED: AtomicI64 = AtomicI64::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);

thread_local! {
    // A const-initialized `Cell` of an integer has no destructor and no lazy
    // initialization, so reading it never allocates and never fails while the thread
    // lives; `try_with` covers the thread's teardown.
    static BALANCE: Cell<i64> = const { Cell::new(0) };
}

/// Wraps the global allocator `A` and counts what passes through it.
pub struct Counting<A> {
    inner: A,
}

impl<A> Counting<A> {
    pub const fn new(inner: A) -> Self {
        Self { inner }
    }
}

/// Bytes allocated and not freed, if the process's global allocator is a [`Counting`]
/// (`None` otherwise, as in a test binary that keeps the default allocator; also until
/// the first thread moved its first balance). Off by up to [`FLUSH_BYTES`] per thread.
pub fn allocated_bytes() -> Option<u64> {
    if !INSTALLED.load(Ordering::Relaxed) {
        return None;
    }
    Some(ALLOCATED.load(Ordering::Relaxed).max(0) as u64)
}

/// Counts `delta` bytes when `pointer` is an allocation that succeeded; returns `pointer`.
#[inline]
fn counted(pointer: *mut u8, delta: i64) -> *mut u8 {
    if !pointer.is_null() {
        count(delta);
    }
    pointer
}

#[inline]
fn count(delta: i64) {
    let flushed = BALANCE.try_with(|balance| {
        let total = balance.get() + delta;
        if total.abs() >= FLUSH_BYTES {
            ALLOCATED.fetch_add(total, Ordering::Relaxed);
            if !INSTALLED.load(Ordering::Relaxed) {
                INSTALLED.store(true, Ordering::Relaxed);
            }
            balance.set(0);
        } else {
            balance.set(total);
        }
    });
    if flushed.is_err() {
        // The thread is being torn down: count straight into the total.
        ALLOCATED.fetch_add(delta, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to `inner` with the caller's arguments unchanged, so
// `Counting<A>` upholds `GlobalAlloc`'s contract exactly when `A` does; the counting
// itself neither allocates nor unwinds.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Counting<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees (non-zero size layout).
        counted(unsafe { self.inner.alloc(layout) }, layout.size() as i64)
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        counted(
            unsafe { self.inner.alloc_zeroed(layout) },
            layout.size() as i64,
        )
    }

    #[inline]
    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        // SAFETY: the caller guarantees `pointer` came from this allocator with `layout`;
        // it came from `inner`, as every allocation here does.
        unsafe { self.inner.dealloc(pointer, layout) };
        count(-(layout.size() as i64));
    }

    #[inline]
    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`, and the caller guarantees `new_size` is valid.
        let moved = unsafe { self.inner.realloc(pointer, layout, new_size) };
        counted(moved, new_size as i64 - layout.size() as i64)
    }
}

/// The process's resident set in bytes, from `/proc/self/status` (Linux); `None` where
/// there is no such file or it has no `VmRSS` line.
pub fn resident_bytes() -> Option<u64> {
    resident_bytes_in("/proc/self/status")
}

/// The resident set of process `pid` in bytes (Linux), as [`resident_bytes`] reads its
/// own; a load tool watches a server this way.
pub fn resident_bytes_of(pid: u32) -> Option<u64> {
    resident_bytes_in(&format!("/proc/{pid}/status"))
}

fn resident_bytes_in(status_path: &str) -> Option<u64> {
    let status = std::fs::read_to_string(status_path).ok()?;
    resident_bytes_from_status(&status)
}

fn resident_bytes_from_status(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[global_allocator]
    static ALLOCATOR: Counting<mimalloc::MiMalloc> = Counting::new(mimalloc::MiMalloc);

    /// The count is process-wide: the other tests here, run in parallel, allocate only a
    /// few KiB, well inside the slack.
    #[test]
    fn counts_live_bytes_within_the_flush_slack() {
        // Twice the flush size: the thread's balance may start below zero.
        let _warm_up = vec![0u8; 2 * FLUSH_BYTES as usize];
        assert!(
            allocated_bytes().is_some(),
            "installed: the first flush happened"
        );
        let slack = FLUSH_BYTES as u64 * 4;
        let before = allocated_bytes().unwrap_or(0);
        let held: Vec<Vec<u8>> = (0..64).map(|_| vec![7u8; 256 << 10]).collect();
        let during = allocated_bytes().unwrap_or(0);
        let expected = 64 * (256 << 10);
        assert!(
            during + slack >= before + expected && during <= before + expected + slack,
            "holding {expected} bytes: {before} before, {during} during"
        );
        let mut grown = vec![0u8; 1 << 10];
        grown.resize(8 << 20, 1);
        let after_grow = allocated_bytes().unwrap_or(0);
        assert!(after_grow + slack >= during + (8 << 20), "realloc counted");
        drop(grown);
        drop(held);
        let after = allocated_bytes().unwrap_or(0);
        assert!(
            after <= before + slack,
            "all freed: {before} before, {after} after"
        );
    }

    #[test]
    fn resident_bytes_reads_vm_rss_in_kib() {
        let status = "Name:\tsluice\nVmPeak:\t  900 kB\nVmRSS:\t   12345 kB\nThreads:\t4\n";
        assert_eq!(resident_bytes_from_status(status), Some(12345 * 1024));
        assert_eq!(resident_bytes_from_status("Name:\tx\n"), None);
        assert_eq!(resident_bytes_from_status("VmRSS:\tlots kB\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn resident_bytes_of_this_process_is_positive() {
        assert!(resident_bytes().is_some_and(|bytes| bytes > 0));
    }
}
