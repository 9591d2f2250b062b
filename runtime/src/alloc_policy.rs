//! How the process's allocator treats freed memory, set once by a program at start.
//!
//! Why: the executor allocates each op's output afresh (a prefill of a 0.5B decoder makes
//! tens of buffers of 10 MB and one of 311 MB per run). glibc serves allocations above its
//! mmap threshold with fresh `mmap`s and hands freed heap tops back to the kernel, so every
//! run page-faults its buffers in again and the kernel zeroes each page: a quarter of a
//! 512-token prefill on a 2-core machine went to `clear_page`. Keeping freed memory in the
//! heap for reuse removed it (199 -> 279 tokens/s on the same machine and run). Peak memory is
//! unchanged; the resident size simply stays at the peak until the process exits.
//!
//! Only programs call [`keep_freed_memory`] (the `jetc` binary, the benchmark programs): a
//! library should not change its host's allocator.

/// Serves every allocation from the heap and never trims it, where the C library is glibc;
/// elsewhere it does nothing. Returns whether the setting took.
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes glibc's tuning parameters; called before threads start.
        unsafe { libc::mallopt(libc::M_MMAP_MAX, 0) == 1 && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
