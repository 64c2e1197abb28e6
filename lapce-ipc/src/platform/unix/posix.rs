//! Portable POSIX backend (what macOS uses; selectable on Linux with the `posix` feature):
//! `shm_open` segments and no futex. Blocking waits sleep on their doorbell with `poll`, which
//! also watches the control socket, so no hang-up watcher thread is needed either.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rustix::fs::{ftruncate, Mode};

use crate::error::Result;

/// This backend has no futex: blocking sleepers use their doorbell.
pub(crate) const HAS_FUTEX: bool = false;
/// Nor a hang-up watcher: blocking sleepers poll the control socket themselves.
pub(crate) const HAS_HANGUP_WATCHER: bool = false;

/// A new segment descriptor: a POSIX shared-memory object of `len` bytes with a random name,
/// unlinked as soon as it is created (the descriptor is what travels to the peer). `label` is
/// unused.
///
/// Without seals a peer could shrink the object under our mapping (Linux allows `ftruncate` on
/// it; macOS does not resize shared-memory objects once sized), which would turn our accesses
/// into SIGBUS: the memfd backend is the hardened one on Linux.
pub(crate) fn new_segment_fd(_label: &str, len: usize) -> Result<OwnedFd> {
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
    Ok(fd)
}

/// Nothing to check on a received shared-memory object beyond its size (no seals exist).
pub(crate) fn check_segment_fd(_fd: &OwnedFd) -> Result<()> {
    Ok(())
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
