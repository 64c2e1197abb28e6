//! Linux backend: memfd segments (sealed, never visible in `/dev/shm`), futex sleeping and
//! eventfd doorbells.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use memmap2::{MmapOptions, MmapRaw};
use rustix::event::{eventfd, EventfdFlags};
use rustix::fs::{fcntl_add_seals, fcntl_get_seals, fstat, ftruncate, memfd_create, MemfdFlags, SealFlags};
use rustix::thread::futex;

use crate::error::{IpcError, Result};

/// Seals every segment carries: its size can never change, so a mapping can never lose its
/// backing pages (a shrink would turn our reads into SIGBUS).
const REQUIRED_SEALS: SealFlags = SealFlags::SHRINK.union(SealFlags::GROW).union(SealFlags::SEAL);

/// A shared-memory segment: an anonymous memfd mapped read-write into this process.
///
/// The mapping lives as long as the value; the memory is freed by the kernel when the last
/// process holding the fd or a mapping lets go, so a crash leaves nothing behind.
pub(crate) struct Segment {
    fd: OwnedFd,
    map: MmapRaw,
}

impl Segment {
    /// Creates a zero-filled, sealed segment of `len` bytes. `label` only shows up in
    /// `/proc/<pid>/fd` (as `memfd:label`) to help debugging.
    pub(crate) fn create(label: &str, len: usize) -> Result<Segment> {
        if len == 0 {
            return Err(IpcError::InvalidArgument("segment length must be > 0".into()));
        }
        let fd =
            memfd_create(label, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).map_err(io::Error::from)?;
        ftruncate(&fd, len as u64).map_err(io::Error::from)?;
        fcntl_add_seals(&fd, REQUIRED_SEALS).map_err(io::Error::from)?;
        Self::map(fd, len)
    }

    /// Opens a segment received from a peer, after checking that it is sealed against resizing
    /// and has exactly the size the handshake announced.
    pub(crate) fn open(fd: OwnedFd, expected_len: usize) -> Result<Segment> {
        let seals = fcntl_get_seals(&fd)
            .map_err(|e| IpcError::Handshake(format!("segment fd is not a sealable memfd: {e}")))?;
        if !seals.contains(SealFlags::SHRINK | SealFlags::GROW) {
            return Err(IpcError::Handshake(format!(
                "segment is not sealed against resizing (seals {seals:?})"
            )));
        }
        let st = fstat(&fd).map_err(io::Error::from)?;
        if st.st_size < 0 || st.st_size as u64 != expected_len as u64 {
            return Err(IpcError::Handshake(format!(
                "segment is {} bytes, handshake announced {expected_len}",
                st.st_size
            )));
        }
        Self::map(fd, expected_len)
    }

    /// The size of a segment received from a peer, before opening it.
    pub(crate) fn size_of(fd: &OwnedFd) -> Result<usize> {
        let st = fstat(fd).map_err(io::Error::from)?;
        usize::try_from(st.st_size).map_err(|_| IpcError::Handshake("segment has a negative size".into()))
    }

    fn map(fd: OwnedFd, len: usize) -> Result<Segment> {
        let file = File::from(fd);
        let map = MmapOptions::new().len(len).map_raw(&file)?;
        Ok(Segment { fd: file.into(), map })
    }

    /// Start of the mapping. Valid for [`Segment::len`] bytes while `self` lives.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    /// Length of the mapping in bytes.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// The memfd, to pass to a peer.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Why [`futex_wait`] returned.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WaitOutcome {
    /// Woken, or the word no longer held the expected value: re-check the condition.
    Woken,
    /// The timeout elapsed.
    TimedOut,
}

/// Sleeps while `word == expected`, for at most `timeout`. Not private: the word lives in memory
/// shared with another process, so the kernel must key the futex on the physical page.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) -> WaitOutcome {
    let ts = rustix::fs::Timespec { tv_sec: timeout.as_secs() as _, tv_nsec: timeout.subsec_nanos() as _ };
    match futex::wait(word, futex::Flags::empty(), expected, Some(&ts)) {
        Err(rustix::io::Errno::TIMEDOUT) => WaitOutcome::TimedOut,
        // Ok: woken. AGAIN: value already changed. INTR: signal. All mean "re-check".
        _ => WaitOutcome::Woken,
    }
}

/// Wakes every process sleeping on `word`.
pub(crate) fn futex_wake(word: &AtomicU32) {
    let _ = futex::wake(word, futex::Flags::empty(), i32::MAX as u32);
}

/// An eventfd used as a doorbell: `ring` makes it readable, `drain` resets it.
/// Non-blocking, so it can be registered with tokio's `AsyncFd`.
pub(crate) struct Doorbell {
    fd: OwnedFd,
}

impl Doorbell {
    /// A fresh doorbell.
    pub(crate) fn new() -> Result<Doorbell> {
        let fd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).map_err(io::Error::from)?;
        Ok(Doorbell { fd })
    }

    /// Wraps a doorbell fd received from the peer, making sure it is non-blocking.
    pub(crate) fn from_fd(fd: OwnedFd) -> Result<Doorbell> {
        // An 8-byte read/write on a non-eventfd could block or misbehave; make it non-blocking
        // so the worst a hostile peer can do with a wrong fd is an error.
        rustix::io::ioctl_fionbio(&fd, true).map_err(io::Error::from)?;
        Ok(Doorbell { fd })
    }

    /// Makes the doorbell readable (adds one to the eventfd counter).
    pub(crate) fn ring(&self) {
        let _ = rustix::io::write(&self.fd, &1u64.to_ne_bytes());
    }

    /// The fd, to pass to the peer or to register with a reactor.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Duplicates the fd (for an `AsyncFd` registration that owns its fd).
    pub(crate) fn try_clone_fd(&self) -> Result<OwnedFd> {
        Ok(self.fd.try_clone()?)
    }
}

// SAFETY: `base()` is the start of a live `MAP_SHARED` read-write mapping of exactly `len()`
// bytes (mmap returns page-aligned addresses) that is unmapped only when the `Segment` drops;
// the memfd is sealed against shrinking, so the pages can never disappear under the mapping.
// The crate never forms Rust references to the mapped bytes except atomics and the record
// slices the ring protocol hands out.
unsafe impl crate::ring::SharedRegion for Segment {
    fn base(&self) -> *mut u8 {
        self.as_ptr()
    }
    fn len(&self) -> usize {
        Segment::len(self)
    }
}
