//! Portable POSIX backend (what macOS uses; selectable on Linux with the `posix` feature):
//! `shm_open` segments and no futex. Blocking waits sleep on their doorbell with `poll`, which
//! also watches the control socket, so no hang-up watcher thread is needed either.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use memmap2::{MmapOptions, MmapRaw};
use rustix::fs::{fstat, ftruncate, Mode};

use crate::error::{IpcError, Result};

/// This backend has no futex: blocking sleepers use their doorbell.
pub(crate) const HAS_FUTEX: bool = false;
/// Nor a hang-up watcher: blocking sleepers poll the control socket themselves.
pub(crate) const HAS_HANGUP_WATCHER: bool = false;

/// A shared-memory segment: a POSIX shared-memory object, unlinked as soon as it is created (the
/// descriptor is what travels to the peer), mapped read-write.
///
/// Without seals a peer could shrink the object under our mapping (Linux allows `ftruncate` on
/// it; macOS does not resize shared-memory objects once sized), which would turn our accesses
/// into SIGBUS: the memfd backend is the hardened one on Linux.
pub(crate) struct Segment {
    fd: OwnedFd,
    map: MmapRaw,
}

impl Segment {
    /// Creates a zero-filled segment of `len` bytes. `label` is unused (the name is random).
    pub(crate) fn create(_label: &str, len: usize) -> Result<Segment> {
        if len == 0 {
            return Err(IpcError::InvalidArgument("segment length must be > 0".into()));
        }
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let flags = rustix::shm::OFlags::CREATE | rustix::shm::OFlags::EXCL | rustix::shm::OFlags::RDWR;
        let mut attempts = 0;
        let fd = loop {
            // At most 31 characters (the macOS limit): "/lapce-ipc-" + 16 hex digits.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            let mix = (u64::from(crate::platform::current_pid()) << 32)
                ^ nanos.rotate_left(17)
                ^ u64::from(COUNTER.fetch_add(1, Ordering::Relaxed)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let name = format!("/lapce-ipc-{mix:016x}");
            match rustix::shm::open(name.as_str(), flags, Mode::from_raw_mode(0o600)) {
                Ok(fd) => {
                    // The descriptor is all anyone needs from now on: nothing stays behind.
                    let _ = rustix::shm::unlink(name.as_str());
                    break fd;
                }
                Err(rustix::io::Errno::EXIST) if attempts < 16 => attempts += 1,
                Err(e) => return Err(io::Error::from(e).into()),
            }
        };
        ftruncate(&fd, len as u64).map_err(io::Error::from)?;
        Self::map(fd, len)
    }

    /// Opens a segment received from a peer, after checking its size.
    pub(crate) fn open(fd: OwnedFd, expected_len: usize) -> Result<Segment> {
        let len = Self::size_of(&fd)?;
        if len != expected_len {
            return Err(IpcError::Handshake(format!(
                "segment is {len} bytes, handshake announced {expected_len}"
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
        let map = MmapOptions::new().len(len).map_raw(&fd)?;
        Ok(Segment { fd, map })
    }

    /// Start of the mapping. Valid for [`Segment::len`] bytes while `self` lives.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    /// Length of the mapping in bytes.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// The descriptor, to pass to a peer.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

// SAFETY: `base()` is the start of a live `MAP_SHARED` read-write mapping of exactly `len()`
// bytes (mmap returns page-aligned addresses) that is unmapped only when the `Segment` drops.
// Unlike memfd segments these cannot be sealed; a hostile peer shrinking the object could make
// accesses fault (SIGBUS), which is documented on `Segment` and why Linux defaults to memfd.
unsafe impl crate::ring::SharedRegion for Segment {
    fn base(&self) -> *mut u8 {
        self.as_ptr()
    }
    fn len(&self) -> usize {
        Segment::len(self)
    }
}

/// Never called on this backend (`HAS_FUTEX` is false); present so that the layers above need no
/// `#[cfg]`.
pub(crate) fn futex_wait(_word: &AtomicU32, _expected: u32, timeout: Option<Duration>) {
    debug_assert!(false, "futex_wait on a backend without futexes");
    std::thread::sleep(timeout.unwrap_or(Duration::from_millis(1)).min(Duration::from_millis(1)));
}

/// No futex sleeper can exist on this backend.
pub(crate) fn futex_wake(_word: &AtomicU32) {}

/// This backend needs no hang-up watcher: blocking sleepers poll the control socket themselves.
pub(crate) struct HangupWatch;

/// Drops the callback: sleepers here watch the socket themselves (see the module docs).
pub(crate) fn watch_hangup(_sock: impl AsFd, _on_hangup: Box<dyn FnOnce() + Send>) -> Result<HangupWatch> {
    Ok(HangupWatch)
}
