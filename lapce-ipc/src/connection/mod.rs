//! The connection layer: listeners, streams and the handshake that joins them.
//!
//! A listener owns a named control channel (see [`socket_path`]): a Unix-domain socket in the
//! private runtime directory, or a named pipe on Windows. Each accepted client gets its own
//! shared-memory segment holding two rings (one per direction) and four doorbells, handed over
//! the channel; the channel then stays open for the life of the connection so that each side
//! learns at once when the other goes away.

mod blocking;
pub(crate) mod handshake;
mod pool;
mod tokio;

use std::path::PathBuf;
use std::time::Duration;

pub use self::blocking::{SharedMemoryListener, SharedMemoryStream, StreamReceiver, StreamSender};
pub use self::tokio::{
    AsyncSharedMemoryListener, AsyncSharedMemoryStream, AsyncStreamReceiver, AsyncStreamSender,
};
pub use handshake::PROTOCOL_VERSION;
pub use pool::PoolStats;

use crate::channel::WaitStrategy;
use crate::error::{IpcError, Result};

/// Options of a listener or a client connection.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// Capacity of each ring (one per direction) in bytes: a power of two from 4 KiB to 1 GiB.
    /// Chosen by the listener; a client uses what the listener offers. The largest message is
    /// half the capacity minus 8 bytes.
    pub ring_capacity: usize,
    /// How sends and receives wait (spin, adaptive, blocking).
    pub wait: WaitStrategy,
    /// How long either side waits for the other's hello.
    pub handshake_timeout: Duration,
    /// Listener only: segments (with their doorbells) made ahead of time by a background
    /// thread, so that accepting a client creates nothing (default 64). When bursts of clients
    /// empty the pool it grows, up to `max_slots`; after a quiet while it shrinks back to this.
    pub warm_pool: usize,
    /// Listener only: most segments at once, in use and warm (default 1024). A client beyond
    /// that is refused until a connection closes and frees its slot.
    pub max_slots: usize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            ring_capacity: 256 * 1024,
            wait: WaitStrategy::default(),
            handshake_timeout: Duration::from_secs(5),
            warm_pool: 64,
            max_slots: 1024,
        }
    }
}

/// Where the control channel of a listener name lives.
///
/// Names are 1 to 100 characters of `[A-Za-z0-9._-]` (a leading `/`, as in `"/my_ipc"`, is
/// ignored) and do not start with a dot.
///
/// - Unix: `<runtime dir>/<name>.sock`. The runtime directory is `$XDG_RUNTIME_DIR/lapce-ipc/`
///   or `/tmp/lapce-ipc-<uid>/`, created with mode 0700 and refused if another user owns it or
///   it is open to others. The whole path must fit the 107 bytes a Unix socket address holds.
/// - Windows: the named pipe `\\.\pipe\lapce-ipc-<session id>-<name>`.
///
/// ```
/// let path = lapce_ipc::socket_path("/editor-ai")?;
/// assert!(path.to_string_lossy().ends_with("editor-ai.sock") || cfg!(windows));
/// # Ok::<(), lapce_ipc::IpcError>(())
/// ```
pub fn socket_path(name: &str) -> Result<PathBuf> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    let ok = !bare.is_empty()
        && bare.len() <= 100
        && !bare.starts_with('.')
        && bare.bytes().all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c));
    if !ok {
        return Err(IpcError::InvalidArgument(format!(
            "listener name {name:?} must be 1-100 characters of [A-Za-z0-9._-], not starting with '.'"
        )));
    }
    crate::platform::control_path(bare)
}

/// Removes the control-socket files that crashed listeners left in the runtime directory (a
/// file no live process accepts on) and returns their paths. A live listener's socket is never
/// removed. Binding a name already replaces its own stale file, so this is housekeeping (also
/// `lapce-ipc clean`). On Windows there is nothing to clean: pipes vanish with their process.
///
/// ```
/// let removed = lapce_ipc::clean_stale_sockets()?;
/// assert!(removed.iter().all(|p| !p.exists()));
/// # Ok::<(), lapce_ipc::IpcError>(())
/// ```
pub fn clean_stale_sockets() -> Result<Vec<PathBuf>> {
    crate::platform::clean_stale_control_files()
}
