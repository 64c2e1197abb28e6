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
//! Backends: `linux` (memfd, futex, epoll hang-up watcher) plus `unix` (Unix-domain sockets,
//! socket-pair doorbells; shared by every Unix backend). The portable POSIX and Windows backends are tracked separately (issue 3).

mod linux;
mod unix;

pub(crate) use linux::{futex_wait, futex_wake, watch_hangup, HangupWatch, Segment};
pub(crate) use unix::{
    current_pid, current_uid, drain_doorbell, listener_alive, peer_credentials, peer_hung_up, recv_with_fds,
    register_readable, runtime_dir, send_with_fds, Doorbell,
};
