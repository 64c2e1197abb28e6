//! Giving a segment's idle pages back to the kernel while it stays mapped.

use super::segment::Segment;

/// Frees the pages wholly inside `offset..offset + len` of a segment (Linux: `MADV_REMOVE`,
/// which punches a hole in the memfd or tmpfs object, so the memory goes back to the kernel for
/// both processes, and the range reads as zeros until written again).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(super) fn discard_pages(segment: &Segment, offset: usize, len: usize) {
    const PAGE: usize = 4096;
    let start = offset.next_multiple_of(PAGE);
    let end = offset.saturating_add(len).min(segment.len()) / PAGE * PAGE;
    if end <= start {
        return;
    }
    // SAFETY: `start..end` lies inside this segment's live shared mapping (clamped to its
    // length above) and is page aligned. MADV_REMOVE changes no mapping: it only replaces the
    // range's contents with zero pages, which is defined for any bytes; the ring calls this
    // only for bytes that its side owns and no longer needs, and the crate holds no Rust
    // reference into them (only raw pointers and atomics).
    let freed = unsafe {
        rustix::mm::madvise(segment.as_ptr().add(start).cast(), end - start, rustix::mm::Advice::LinuxRemove)
    };
    if let Err(e) = freed {
        tracing::debug!(error = %e, "could not give idle ring pages back to the kernel");
    }
}

/// Elsewhere (macOS) shared pages cannot be freed while mapped: nothing to do.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(super) fn discard_pages(_segment: &Segment, _offset: usize, _len: usize) {}
