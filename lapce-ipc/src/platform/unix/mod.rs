//! Unix backends: Linux (memfd + futex + epoll hang-up watcher) or portable POSIX (`shm_open`,
//! doorbell sleeps), both over Unix-domain control sockets.

#[cfg(all(target_os = "linux", not(feature = "posix")))]
#[path = "linux.rs"]
mod backend;
#[cfg(any(not(target_os = "linux"), feature = "posix"))]
#[path = "posix.rs"]
mod backend;
mod control;
mod socket;

pub(crate) use backend::{futex_wait, futex_wake, HAS_FUTEX, HAS_HANGUP_WATCHER};
pub(crate) use control::{
    clean_stale_control_files, control_path, control_path_in, sleep_blocking, AsyncControlListener,
    AsyncControlStream, AsyncHangupWatch, AsyncSleeper, BorrowedOsHandle, ControlListener, ControlStream,
    OsHandle, PeerLink,
};
pub(crate) use socket::{current_pid, recv_with_fds, send_with_fds, Doorbell, Segment};

/// This process's soft limit on open file descriptors (`RLIMIT_NOFILE`); `None` when unlimited.
/// The warm pool keeps within a share of it.
pub(crate) fn handle_limit() -> Option<usize> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current.map(|n| n as usize)
}

/// Gives the memory allocator's free pages back to the OS. glibc's `malloc` keeps what is freed
/// in its arenas (only the top of each heap shrinks by itself), so without this a server's RSS
/// stays at the high-water mark of its busiest moment, scattered over half-empty pages;
/// `malloc_trim` hands back every whole free page. Elsewhere a no-op: musl and macOS's
/// allocator return free memory on their own.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) fn release_free_heap() {
    // SAFETY: `malloc_trim` takes no pointer: it walks glibc's own free lists, under each arena's
    // lock, and may be called from any thread at any time; its result (whether anything was
    // released) carries no error to handle.
    unsafe { libc::malloc_trim(0) };
}

/// See the glibc version: other C libraries' allocators return free memory on their own.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn release_free_heap() {}

/// Open file descriptors of this process (a leak check for tests and `bench --scale`).
pub(crate) fn open_handles() -> Option<usize> {
    let dir = if cfg!(target_os = "linux") { "/proc/self/fd" } else { "/dev/fd" };
    // One entry is the directory handle `read_dir` itself holds.
    std::fs::read_dir(dir).ok().map(|d| d.count().saturating_sub(1))
}
