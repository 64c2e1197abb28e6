//! # lapce-ipc
//!
//! Shared-memory IPC between local processes that feels like a function call: messages travel
//! through lock-free single-producer/single-consumer rings in memory both processes map, and the
//! kernel is only asked to put a waiter to sleep and wake it up.
//!
//! - [`SharedMemoryListener`] / [`SharedMemoryStream`]: listener and duplex message stream for
//!   tokio; [`BlockingSharedMemoryListener`] / [`BlockingSharedMemoryStream`]: the same on
//!   threads. Every type is named this way: the plain name is the tokio flavour, the `Blocking`
//!   one waits on the calling thread (the only flavour without the `tokio` feature).
//!   Connections are set up over a Unix socket in a private runtime directory (a named
//!   pipe on Windows), which also tells each side when the other dies.
//! - [`BlockingByteStream`] / [`ByteStream`]: a stream as bytes, `std::io::Read + Write` and
//!   `tokio::io::AsyncRead + AsyncWrite`, for codecs and proxies (record boundaries are not
//!   seen; an empty record is EOF).
//! - [`grpc`] (feature `grpc`): tonic and hyper over the byte streams, a client connector and
//!   the server's incoming connections.
//! - [`frame`]: typed, checksummed messages of any size; the async flavour is a
//!   `futures_core::Stream` of [`frame::Frame`]s and a `futures_sink::Sink` of them, and
//!   [`ResponseStream`] is a `Stream` of chunks.
//! - [`SharedMemoryBuffer`]: the low-level ring on its own, for callers that set up their own
//!   processes and pass the segment themselves.
//! - [`IpcConfig`] ([`config`]): the server configuration (`[ipc]` and `[metrics]`), with
//!   defaults that need no file; read from TOML with the `config-file` feature.
//! - [`messages`]: the AI message types ([`messages::AIRequest`], responses, stream chunks, tool
//!   calls, errors) as JSON matching the TypeScript originals and as validated rkyv archives.
//!
//! # Guarantees
//! - Every message is delivered whole, in order, exactly once, or the call returns an error.
//! - A full ring makes the sender wait (spin, then sleep); nothing is dropped.
//! - Nothing read from shared memory is trusted: a peer that scribbles over the ring produces
//!   [`IpcError::Corrupted`] on that connection (the next time this side looks at the ring),
//!   never a panic or an out-of-bounds access in this library. The zero-copy calls
//!   (`recv_with`, `send_with`, [`SharedMemoryBuffer::read_with`]) hand your closure a slice of
//!   the shared mapping itself: a peer that breaks the protocol can change those bytes while you
//!   look, so with an untrusted peer copy first (`recv`) and validate the copy.
//! - A peer that dies, even by `kill -9`, is reported as [`IpcError::PeerGone`] to a caller
//!   waiting on it as soon as the kernel closes the dead process's sockets or pipes (on Linux a
//!   watcher thread per process hears the hang-up; elsewhere sleepers wait on the socket or pipe
//!   too; nothing polls on a timer).
//! - With the default Linux backend segments are sealed memfds (a peer cannot resize them); the
//!   POSIX backend (macOS, or `--features posix`) uses `shm_open` objects, which cannot be sealed;
//!   Windows uses unnamed pagefile-backed sections duplicated into the peer.
//! - Under steady traffic no system call is made per message; an idle connection uses no CPU.
//! - Only our own user connects, by default: on Unix the control socket (0600) lives in a 0700
//!   runtime directory we own, and both sides check the peer's uid as the kernel reports it
//!   (SO_PEERCRED / getpeereid), not as the peer claims it; on Windows both sides check the
//!   peer's user SID. Other Unix users are let in only by name:
//!   [`StreamConfig::allowed_peer_uids`] with a checked [`StreamConfig::socket_dir`]; every
//!   refused client is counted ([`BlockingSharedMemoryListener::rejected`]).
//!
//! # Example
//! ```
//! use lapce_ipc::{BlockingSharedMemoryListener, BlockingSharedMemoryStream};
//!
//! let name = format!("doc-example-{}", std::process::id());
//! let listener = BlockingSharedMemoryListener::bind(&name)?;
//! let server = std::thread::spawn(move || -> lapce_ipc::Result<()> {
//!     let mut conn = listener.accept()?;
//!     let reply = conn.recv_with(|request| request.to_ascii_uppercase())?;
//!     conn.send(&reply)
//! });
//!
//! let mut client = BlockingSharedMemoryStream::connect(&name)?;
//! client.send(b"hello")?;
//! let mut buf = [0u8; 64];
//! let n = client.recv(&mut buf)?;
//! assert_eq!(&buf[..n], b"HELLO");
//! server.join().unwrap()?;
//! # Ok::<(), lapce_ipc::IpcError>(())
//! ```
#![deny(missing_docs)]
// The lower layers keep helpers (hang-up checks, ring gauges, async waits) that only the
// request/response layer calls: without it they are unused, not wrong.
#![cfg_attr(not(feature = "rpc"), allow(dead_code, unused_imports))]
// docs.rs builds with `--cfg docsrs` (Cargo.toml): items behind a feature say which one.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_debug_implementations)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod buffer;
mod channel;
pub mod config;
mod connection;
mod error;
pub mod frame;
#[cfg(feature = "grpc")]
#[cfg_attr(docsrs, doc(cfg(feature = "grpc")))]
pub mod grpc;
#[cfg(feature = "ai-types")]
#[cfg_attr(docsrs, doc(cfg(feature = "ai-types")))]
pub mod messages;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
#[cfg(all(feature = "rpc", not(feature = "metrics")))]
#[path = "metrics/off.rs"]
mod metrics;
mod platform;
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub mod remote;
mod ring;
#[cfg(feature = "rpc")]
mod rpc;

pub use buffer::SharedMemoryBuffer;
pub use channel::WaitStrategy;
pub use config::IpcConfig;
pub use connection::{
    clean_stale_sockets, socket_path, BlockingSharedMemoryListener, BlockingSharedMemoryStream,
    BlockingStreamReceiver, BlockingStreamSender, PoolStats, Rejected, StreamConfig, PROTOCOL_VERSION,
};
pub use connection::{
    BlockingByteReader, BlockingByteStream, BlockingByteWriter, BlockingIncoming, BYTE_RECORD_MAX,
};
#[cfg(feature = "tokio")]
pub use connection::{
    ByteReader, ByteStream, ByteWriter, Incoming, SharedMemoryListener, SharedMemoryStream, StreamReceiver,
    StreamSender,
};
pub use error::{IpcError, Result};
#[cfg(feature = "metrics-http")]
pub use metrics::MetricsEndpoint;
pub use ring::{MAX_CAPACITY, MIN_CAPACITY};
#[cfg(feature = "rpc")]
pub use rpc::{
    BlockingIpcClient, BlockingResponseStream, ChunkSender, HandlerResult, IpcClient, IpcServer,
    Notification, NotificationReceiver, Peer, Reply, RequestContext, ResponseStream, ServerStats,
    StreamCanceller, NOTIFICATION_QUEUE_BYTES, NOTIFICATION_QUEUE_LEN,
};

/// How many OS handles this process has open (file descriptors on Unix, HANDLEs on Windows), or
/// `None` where the OS does not tell. For leak checks: tests and `bench --scale` compare it
/// before and after many connections.
///
/// ```
/// // This process has at least its standard streams open (Wine does not count: `None`).
/// if let Some(n) = lapce_ipc::open_handles() {
///     assert!(n > 0);
/// }
/// ```
pub fn open_handles() -> Option<usize> {
    platform::open_handles()
}
