//! The platform layer: the only place that talks to the operating system.
//!
//! Every backend provides the same small internal API, used by the layers above without any
//! `#[cfg]` of their own:
//!
//! | item | job |
//! |---|---|
//! | [`Segment`] | create / open / map a shared-memory segment that has no name in any file system |
//! | [`futex_wait`], [`futex_wake`] | sleep on / wake a `u32` in shared memory (blocking waits) |
//! | [`Doorbell`] | a socket-pair doorbell a tokio reactor can wait on (async waits) |
//! | [`send_with_fds`], [`recv_with_fds`] | the control channel's message + file-descriptor passing |
//! | [`peer_credentials`], [`current_uid`], [`peer_hung_up`] | peer credentials and liveness |
//! | [`watch_hangup`] | run a callback as soon as a control socket's peer hangs up |
//! | [`runtime_dir`] | the private per-user directory where control sockets live |
//!
//! Backends: `linux.rs` (memfd, futex, epoll hang-up watcher; the default on Linux) or
//! `posix.rs` (shm_open, doorbell sleeps; macOS, and Linux with the `posix` feature), plus
//! `unix.rs` (Unix-domain sockets, socket-pair doorbells, credentials; shared by both).
//! [`HAS_FUTEX`] and [`HAS_HANGUP_WATCHER`] tell the channel layer how blocking sleepers sleep
//! and learn of a peer's death. The portable POSIX and Windows backends are tracked separately (issue 3).

#[cfg(all(target_os = "linux", not(feature = "posix")))]
#[path = "linux.rs"]
mod backend;
#[cfg(any(not(target_os = "linux"), feature = "posix"))]
#[path = "posix.rs"]
mod backend;
mod unix;

pub(crate) use backend::{futex_wait, futex_wake, watch_hangup, HangupWatch, HAS_FUTEX, HAS_HANGUP_WATCHER};
pub(crate) use unix::{
    current_pid, current_uid, drain_doorbell, listener_alive, peer_credentials, peer_hung_up, poll_sleep,
    recv_with_fds, register_readable, runtime_dir, send_with_fds, Doorbell, Segment,
};
