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

/// Faults in the whole pages inside `buf` with one call
/// (`MADV_POPULATE_WRITE`, Linux 5.14+) rather than one trap per page as
/// they are first written: for buffers that are kept (a RAM store's
/// chunks). Contents are unchanged. Elsewhere, or refused: nothing (the
/// pages fault in as they are written).
pub fn prefault(buf: &mut [std::mem::MaybeUninit<u8>]) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: sysconf only reads a constant of the process.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let Ok(page) = usize::try_from(page) else {
            return;
        };
        if page == 0 {
            return;
        }
        let start = buf.as_mut_ptr() as usize;
        let from = start.next_multiple_of(page);
        let to = (start + buf.len()) / page * page;
        if to > from {
            // SAFETY: [from, to) lies inside `buf`, which this call
            // borrows mutably; MADV_POPULATE_WRITE only maps those pages
            // (their contents unchanged), and a refusal (an older kernel:
            // EINVAL) changes nothing.
            let _ = unsafe {
                libc::madvise(
                    from as *mut libc::c_void,
                    to - from,
                    libc::MADV_POPULATE_WRITE,
                )
            };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = buf;
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

#[cfg(test)]
mod tests {
    /// Prefaulting a buffer's room changes nothing in it, written or not.
    #[test]
    fn prefault_leaves_a_buffers_bytes_as_they_were() {
        let mut b = bytes::BytesMut::with_capacity(1 << 20);
        b.extend_from_slice(&[7u8; 5000]);
        super::prefault(b.spare_capacity_mut());
        assert!(b.iter().all(|&x| x == 7));
        b.extend_from_slice(&[9u8; 100_000]);
        assert_eq!(b.len(), 105_000);
        assert!(b[..5000].iter().all(|&x| x == 7) && b[5000..].iter().all(|&x| x == 9));
        super::prefault(&mut []);
    }
}
