//! Unix backends: Linux (memfd + futex + epoll hang-up watcher) or portable POSIX (`shm_open`,
//! doorbell sleeps), both over Unix-domain control sockets.

#[cfg(all(target_os = "linux", not(feature = "posix")))]
#[path = "linux.rs"]
mod backend;
#[cfg(any(not(target_os = "linux"), feature = "posix"))]
#[path = "posix.rs"]
mod backend;
mod boot_tag;
mod control;
mod credentials;
mod discard;
mod doorbell;
mod fd_passing;
mod os;
mod runtime_dir;
mod segment;
mod socket;

pub(crate) use backend::{futex_wait, futex_wake, HAS_FUTEX, HAS_HANGUP_WATCHER};
pub(crate) use control::{
    clean_stale_control_files, control_path, control_path_in, sleep_blocking, BorrowedOsHandle,
    ControlListener, ControlStream, OsHandle, PeerLink,
};
#[cfg(feature = "tokio")]
pub(crate) use control::{poll_sleep, AsyncControlListener, AsyncControlStream, AsyncHangupWatch};
pub(crate) use credentials::current_pid;
pub(crate) use doorbell::{Doorbell, DOORBELL_HANDLES};
pub(crate) use fd_passing::{recv_with_fds, send_with_fds};
pub(crate) use segment::Segment;

/// Borrows a handle (the same call on every backend).
pub(crate) fn borrow_handle(handle: &OsHandle) -> BorrowedOsHandle<'_> {
    std::os::fd::AsFd::as_fd(handle)
}

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

/// Raises this process's soft limit on open file descriptors to its hard limit, once per
/// process (later calls do nothing), as Go's runtime does at start: the common soft limit of
/// 1024 holds about 300 connections at three descriptors each, far below what a server is
/// configured for, while the hard limit is usually far higher. Returns the soft limit before
/// and after when it raised it. macOS refuses a soft limit above `OPEN_MAX` with an unlimited
/// hard limit, so there it stops at `OPEN_MAX` (10240).
pub(crate) fn raise_handle_limit() -> Option<(u64, u64)> {
    static RAISED: std::sync::Once = std::sync::Once::new();
    let mut raised = None;
    RAISED.call_once(|| {
        use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
        let Rlimit { current: Some(soft), maximum } = getrlimit(Resource::Nofile) else { return };
        let mut target = maximum.unwrap_or(u64::MAX);
        if cfg!(target_os = "macos") {
            target = target.min(10240);
        }
        if target > soft && setrlimit(Resource::Nofile, Rlimit { current: Some(target), maximum }).is_ok() {
            raised = Some((soft, target));
        }
    });
    raised
}

/// Whether `e` says this process (or the system) has no file descriptor left.
pub(crate) fn is_out_of_handles(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// Open file descriptors of this process (a leak check for tests and `bench --scale`).
pub(crate) fn open_handles() -> Option<usize> {
    let dir = if cfg!(target_os = "linux") { "/proc/self/fd" } else { "/dev/fd" };
    // One entry is the directory handle `read_dir` itself holds.
    std::fs::read_dir(dir).ok().map(|d| d.count().saturating_sub(1))
}
