//! The platform layer: the only place that talks to the operating system.
//!
//! Every backend provides the same small internal API, used by the layers above without any
//! `#[cfg]` of their own:
//!
//! | item | job |
//! |---|---|
//! | [`Segment`] | create / open / map a shared-memory segment that has no name anywhere |
//! | [`OsHandle`], [`BorrowedOsHandle`] | what carries a segment or a doorbell to the peer (fd / HANDLE) |
//! | [`Doorbell`] | one side sleeps on it, the other rings it (async waits; blocking ones without a futex) |
//! | [`futex_wait`], [`futex_wake`], [`HAS_FUTEX`] | sleep on / wake a `u32` in shared memory, where the OS can |
//! | [`ControlListener`], [`ControlStream`] | the named control channel: bind, accept, connect, hello messages with handles attached, the peer's identity |
//! | [`AsyncControlListener`], [`AsyncControlStream`] | the same for tokio |
//! | [`PeerLink`], [`HAS_HANGUP_WATCHER`] | after the handshake: tells at once when the peer closed the connection or died |
//! | [`sleep_blocking`], [`poll_sleep`] | wait for a doorbell or the peer's hang-up, blocking or in tokio |
//! | [`AsyncHangupWatch`] | wait in tokio for the peer's hang-up alone (backends without a watcher) |
//! | [`control_path`] | where a listener name lives (socket file or pipe name) |
//! | [`release_free_heap`] | give the allocator's free pages back to the OS (glibc keeps them) |
//!
//! Backends, one folder per OS family:
//! - `unix/`: one file per mechanism shared by all Unixes: `control.rs` (the Unix-domain control
//!   socket), `fd_passing.rs` (`SCM_RIGHTS`), `segment.rs` (the mapped segment) and `discard.rs`
//!   (its idle pages given back), `credentials.rs` (the peer's uid and pid), `socket.rs` (socket
//!   pairs, hang-up and listener probes), `doorbell.rs` (socket-pair doorbells), `runtime_dir.rs`
//!   and `boot_tag.rs` (where sockets live), `os.rs` (what differs between Linux and macOS);
//!   plus a segment backend: `unix/linux.rs` (sealed memfd, futex, an epoll thread hearing
//!   hang-ups; the default on Linux) or `unix/posix.rs` (`shm_open`, doorbell sleeps; macOS, and
//!   Linux with the `posix` feature).
//! - `windows/`: pagefile-backed sections, auto-reset events, a named-pipe control channel;
//!   handles are duplicated into the peer instead of being passed by name.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub(crate) use unix::*;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub(crate) use windows::*;

#[cfg(not(any(unix, windows)))]
compile_error!("lapce-ipc supports Unix (Linux, macOS) and Windows");

#[cfg(test)]
mod conformance;

/// Time left before a handshake `deadline`, for both backends' control channels;
/// [`IpcError::Timeout`](crate::IpcError::Timeout) when none.
fn time_left(deadline: std::time::Instant) -> crate::Result<std::time::Duration> {
    deadline
        .checked_duration_since(std::time::Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or(crate::IpcError::Timeout)
}
