//! Allocator settings for a node that streams 64 KiB buffers.
//!
//! glibc's malloc gives freed memory back to the kernel as soon as more than
//! 128 KiB sits free at the top of an arena, and hands its mmap threshold
//! up and down as large buffers come and go. A node moves 64 KiB buffers
//! from thread to thread (a store read on the blocking pool, freed by the
//! writer on a worker), so the same pages were returned and faulted in
//! again for every few frames: 140,000 page faults per GiB served by the
//! overlay, about a fifth of its throughput (`benches/overlay.rs`).

/// Resident memory in 4 KiB pages for this process (both profiles):
/// allocators ask for transparent huge pages (mimalloc 3 marks its 1 GiB
/// arena `MADV_HUGEPAGE`), and then every touched 2 MiB of the arena is
/// resident whole, and every 2 MiB it gives back and touches again is
/// zeroed whole. Measured on micronode: 57 MiB of huge pages behind 12 MiB
/// of stored objects, 1.5× the edge budget's bound. Measured on the
/// overlay (`benches/overlay.rs`, same run, huge pages on → off): 1 GiB
/// fetched into the store 612 → 856 MiB/s over TLS and 287 → 443 MiB/s
/// over QUIC (the kernel's `clear_page_erms` was 45 % of the CPU), a QUIC
/// transfer 485 → 545 MiB/s, and an idle session pair 176 → 50 KiB.
/// Elsewhere (and where the kernel refuses): nothing to do.
pub fn small_pages() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_THP_DISABLE takes plain integers and changes only
        // this process's huge page policy; a refusal (-1: an old kernel)
        // changes nothing, which is all there is to do about it.
        let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    }
}

/// Keeps up to 8 MiB free at the top of each glibc arena and serves
/// buffers of 4 MiB and more from their own mappings (given back as soon
/// as they are freed). An operator's own `MALLOC_TRIM_THRESHOLD_` or
/// `MALLOC_MMAP_THRESHOLD_` is left alone. Other allocators and platforms:
/// nothing to do.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let operator_set = ["MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_"]
            .iter()
            .any(|v| std::env::var_os(v).is_some());
        if !operator_set {
            // SAFETY: mallopt only sets allocator parameters (under the
            // allocator's own lock); it is called once, before the runtime
            // starts, and a refused setting (return 0) changes nothing.
            unsafe {
                libc::mallopt(libc::M_TRIM_THRESHOLD, 8 << 20);
                libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
            }
        }
    }
}
