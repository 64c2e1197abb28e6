//! [`Segment`]: a shared-memory segment mapped read-write, over the backend's descriptor.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::discard::discard_pages;
use crate::error::{IpcError, Result};

/// A shared-memory segment mapped read-write into this process; the backend decides what kind
/// of descriptor backs it ([`new_segment_fd`](super::backend::new_segment_fd)) and what a
/// received one must satisfy ([`check_segment_fd`](super::backend::check_segment_fd)). The
/// mapping lives as long as the value; it needs no descriptor, so whoever holds one (to pass it
/// on) decides how long to keep it.
pub(crate) struct Segment {
    map: memmap2::MmapRaw,
}

impl Segment {
    /// Creates a zero-filled segment of `len` bytes: its mapping and its descriptor. `label`
    /// helps debugging where the backend can show it.
    pub(crate) fn create(label: &str, len: usize) -> Result<(Segment, OwnedFd)> {
        if len == 0 {
            return Err(IpcError::InvalidArgument("segment length must be > 0".into()));
        }
        let fd = super::backend::new_segment_fd(label, len)?;
        Ok((Self::map(fd.as_fd(), len)?, fd))
    }

    /// Maps a segment received from a peer, after the backend's checks and a check that it has
    /// exactly the size the handshake announced.
    pub(crate) fn open(fd: BorrowedFd<'_>, expected_len: usize) -> Result<Segment> {
        super::backend::check_segment_fd(fd)?;
        let len = Self::size_of(fd)?;
        if len != expected_len {
            return Err(IpcError::Handshake(format!(
                "segment is {len} bytes, handshake announced {expected_len}"
            )));
        }
        Self::map(fd, expected_len)
    }

    /// The size of a segment received from a peer, before opening it.
    pub(crate) fn size_of(fd: BorrowedFd<'_>) -> Result<usize> {
        let st = rustix::fs::fstat(fd).map_err(io::Error::from)?;
        usize::try_from(st.st_size).map_err(|_| IpcError::Handshake("segment has a negative size".into()))
    }

    fn map(fd: BorrowedFd<'_>, len: usize) -> Result<Segment> {
        let map = memmap2::MmapOptions::new().len(len).map_raw(&fd)?;
        Ok(Segment { map })
    }

    /// Start of the mapping. Valid for [`Segment::len`] bytes while `self` lives.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    /// Length of the mapping in bytes.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

// SAFETY: `base()` is the start of a live `MAP_SHARED` read-write mapping of exactly `len()`
// bytes (mmap returns page-aligned addresses) that is unmapped only when the `Segment` drops.
// With the Linux backend the memfd is sealed against shrinking, so the pages can never disappear
// under the mapping; the POSIX backend cannot seal (a hostile peer shrinking the object could
// make accesses fault, as documented on its `new_segment_fd`). The crate never forms Rust
// references to the mapped bytes except atomics and the record slices the ring hands out.
unsafe impl crate::ring::SharedRegion for Segment {
    fn base(&self) -> *mut u8 {
        self.as_ptr()
    }
    fn len(&self) -> usize {
        Segment::len(self)
    }
    fn discard(&self, offset: usize, len: usize) {
        discard_pages(self, offset, len);
    }
}
