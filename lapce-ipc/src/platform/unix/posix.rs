//! Portable POSIX backend (what macOS uses; selectable on Linux with the `posix` feature):
//! `shm_open` segments and no futex. Blocking waits sleep on their doorbell with `poll`, which
//! also watches the control socket, so no hang-up watcher thread is needed either.

use std::io;
use std::os::fd::OwnedFd;
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
        let mix = nanos.rotate_left(17)
            ^ u64::from(COUNTER.fetch_add(1, Ordering::Relaxed)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        // The creator's pid first, so that a name left by a process killed between `open` and
        // `unlink` can be told from a live one (see `clean_stale_segments`).
        let name = format!("{SHM_PREFIX}{:08x}{:08x}", crate::platform::current_pid(), mix as u32);
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

/// Start of every segment name: `/lapce-ipc-` then the creator's pid and 8 random digits in hex.
const SHM_PREFIX: &str = "/lapce-ipc-";

/// Removes the shared-memory names that processes killed between creating and unlinking a
/// segment left behind (a window of two system calls) and returns them as `/dev/shm` paths. A
/// name is removed only if the process its name records is gone, so a segment being created
/// right now is never touched. Linux only (elsewhere the names cannot be listed): nothing to do.
pub(crate) fn clean_stale_segments() -> Vec<std::path::PathBuf> {
    let mut removed = Vec::new();
    if !cfg!(target_os = "linux") {
        return removed;
    }
    let Ok(dir) = std::fs::read_dir("/dev/shm") else { return removed };
    for entry in dir.flatten() {
        let file = entry.file_name();
        let Some(hex) = file.to_str().and_then(|f| f.strip_prefix(&SHM_PREFIX[1..])) else { continue };
        let Some(pid) = hex.get(..8).and_then(|p| u32::from_str_radix(p, 16).ok()) else { continue };
        if hex.len() != 16 || process_alive(pid) {
            continue;
        }
        if rustix::shm::unlink(format!("/{}", file.to_string_lossy()).as_str()).is_ok() {
            removed.push(entry.path());
        }
    }
    removed
}

/// Whether a process with this id exists (signal 0: nothing is sent). A process we may not
/// signal counts as alive.
fn process_alive(pid: u32) -> bool {
    let Some(pid) = rustix::process::Pid::from_raw(pid as i32) else { return false };
    !matches!(rustix::process::test_kill_process(pid), Err(rustix::io::Errno::SRCH))
}

/// Nothing to check on a received shared-memory object beyond its size (no seals exist).
pub(crate) fn check_segment_fd(_fd: std::os::fd::BorrowedFd<'_>) -> Result<()> {
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
pub(crate) fn watch_hangup(
    _sock: std::os::fd::BorrowedFd<'_>,
    _on_hangup: Box<dyn FnOnce() + Send>,
) -> Result<HangupWatch> {
    Ok(HangupWatch)
}

impl HangupWatch {
    /// Nothing to end.
    pub(crate) fn cancel(&self, _sock: std::os::fd::BorrowedFd<'_>) {}
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// A name left by a dead creator is removed; one whose creator lives (this process) stays.
    #[test]
    fn stale_segment_names_of_dead_creators_are_removed() {
        let flags = rustix::shm::OFlags::CREATE | rustix::shm::OFlags::EXCL | rustix::shm::OFlags::RDWR;
        // Linux pids stay below 2^22, so this creator cannot exist.
        let dead = format!("{SHM_PREFIX}{:08x}{:08x}", 0x7fff_fff0u32, std::process::id());
        let live = format!("{SHM_PREFIX}{:08x}{:08x}", std::process::id(), 0x5eedu32);
        for name in [&dead, &live] {
            drop(rustix::shm::open(name.as_str(), flags, Mode::from_raw_mode(0o600)).unwrap());
        }
        let removed = clean_stale_segments();
        let exists = |name: &str| std::path::Path::new("/dev/shm").join(&name[1..]).exists();
        let live_kept = exists(&live);
        let _ = rustix::shm::unlink(live.as_str());
        assert!(removed.iter().any(|p| p.ends_with(&dead[1..])), "{removed:?}");
        assert!(!exists(&dead));
        assert!(live_kept, "a live creator's name was removed");
    }
}
