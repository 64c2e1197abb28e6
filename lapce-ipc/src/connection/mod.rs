//! The connection layer: listeners, streams and the handshake that joins them.
//!
//! A listener owns a named control channel (see [`socket_path`]): a Unix-domain socket in the
//! private runtime directory, or a named pipe on Windows. Each accepted client gets its own
//! shared-memory segment holding two rings (one per direction) and a doorbell per ring, handed
//! over the channel; the channel then stays open for the life of the connection so that each
//! side learns at once when the other goes away. On Unix a connection holds three descriptors
//! on each side: the control socket and its two doorbell ends (the segment's is closed once
//! mapped).

#[cfg(feature = "tokio")]
mod async_bytes;
mod blocking;
mod bytes;
pub(crate) mod handshake;
mod incoming;
mod pool;
#[cfg(feature = "tokio")]
mod tokio;

use std::path::PathBuf;
use std::time::Duration;

#[cfg(feature = "tokio")]
pub use self::async_bytes::{ByteReader, ByteStream, ByteWriter};
pub use self::blocking::{
    BlockingSharedMemoryListener, BlockingSharedMemoryStream, BlockingStreamReceiver, BlockingStreamSender,
    Rejected,
};
pub use self::bytes::{BlockingByteReader, BlockingByteStream, BlockingByteWriter, BYTE_RECORD_MAX};
pub use self::incoming::BlockingIncoming;
#[cfg(feature = "tokio")]
pub use self::incoming::Incoming;
#[cfg(feature = "tokio")]
pub use self::tokio::{SharedMemoryListener, SharedMemoryStream, StreamReceiver, StreamSender};
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
    /// Each warm segment holds nine file descriptors, so all the pools of a process together
    /// keep at most a quarter of its open-file limit warm (28 segments under a soft limit of
    /// 1024); clients beyond the warm ones are still served, their segment made on accept.
    pub warm_pool: usize,
    /// Listener only: most segments at once, in use and warm (default 1024). A client beyond
    /// that is refused until a connection closes and frees its slot.
    pub max_slots: usize,
    /// Unix: the directory the control socket lives in, instead of the private runtime
    /// directory (`None`, the default; see [`socket_path`]). Both sides must name the same one.
    ///
    /// It is what lets another user reach a listener at all (nobody else can traverse the 0700
    /// runtime directory). It is never created, and binding or connecting refuses it
    /// ([`IpcError::InsecurePath`], naming the path and the problem) unless it is an absolute
    /// path to an existing directory, not a symlink, owned by this process's uid (a client also
    /// accepts a directory owned by one of [`allowed_peer_uids`](Self::allowed_peer_uids)), and
    /// not writable by group or others (`mode & 0o022 == 0`). With an empty allow-list it must
    /// also be 0700 like the runtime directory; with a non-empty one a mode such as 0711 lets the
    /// allowed users traverse it. Windows refuses a `Some` with [`IpcError::InvalidArgument`].
    pub socket_dir: Option<PathBuf>,
    /// Unix: the uids besides our own whose peers are accepted (empty by default: our own user
    /// only). Applied by both sides from the credentials the kernel records at connect time
    /// (SO_PEERCRED / getpeereid), not from anything the peer claims: a listener refuses a
    /// client running as any other uid (counted in `rejected()`, with an
    /// [`IpcError::PeerRefused`] reason naming both uids), and a client refuses a listener
    /// running as any other uid.
    ///
    /// When the list is not empty, a listener makes its socket file mode 0666 so that the
    /// allowed users can connect at all; the file mode then keeps nobody out, the credential
    /// check does. Use it together with [`socket_dir`](Self::socket_dir). Windows, where the
    /// trust boundary is the user account, refuses a non-empty list with
    /// [`IpcError::InvalidArgument`] at bind and connect.
    pub allowed_peer_uids: Vec<u32>,
    /// Unix: raise this process's soft limit on open files (`RLIMIT_NOFILE`) to its hard limit
    /// at the first bind or connect (default `true`), as Go's runtime does for every program.
    /// A connection holds three descriptors on each side (its control socket and one doorbell
    /// end per direction), so the usual soft limit of 1024 would hold about 300 connections.
    /// Turn it off for a process that hands its limit on to programs using `select()`, which
    /// cannot watch descriptors above 1023. Windows has no such limit.
    pub raise_open_file_limit: bool,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            ring_capacity: 256 * 1024,
            wait: WaitStrategy::default(),
            handshake_timeout: Duration::from_secs(5),
            warm_pool: 64,
            max_slots: 1024,
            socket_dir: None,
            allowed_peer_uids: Vec::new(),
            raise_open_file_limit: true,
        }
    }
}

impl StreamConfig {
    /// What a bind or a connect does to the process first: raise its open-file limit (see
    /// [`raise_open_file_limit`](Self::raise_open_file_limit)).
    pub(crate) fn prepare_process(&self) {
        if !self.raise_open_file_limit {
            return;
        }
        if let Some((from, to)) = crate::platform::raise_handle_limit() {
            tracing::debug!(from, to, "raised the soft open-file limit (RLIMIT_NOFILE) to the hard limit");
        }
    }
}

/// Where the control channel of a listener name lives.
///
/// Names are 1 to 100 characters of `[A-Za-z0-9._-]` (a leading `/`, as in `"/my_ipc"`, is
/// ignored) and do not start with a dot.
///
/// - Unix: `<runtime dir>/<name>.sock`. The runtime directory is `$XDG_RUNTIME_DIR/lapce-ipc/`
///   or `/tmp/lapce-ipc-<uid>-<boot>/` (`<boot>`: 8 hex digits that change at every boot, so a
///   persistent `/tmp` never mixes boots; `$LAPCE_IPC_TMPDIR` replaces `/tmp` when set), created
///   with mode 0700 and refused if another user owns it or it is open to others. The whole path
///   must fit the 107 bytes a Unix socket address holds.
///   This is where a listener or client with the default [`StreamConfig`] goes; one with a
///   [`StreamConfig::socket_dir`] uses `<socket_dir>/<name>.sock` instead (checked when binding
///   or connecting, not here).
/// - Windows: the named pipe `\\.\pipe\lapce-ipc-<user>-<name>` (`<user>`: a hash of the user's
///   SID, so two users' listeners of one name never meet).
///
/// ```
/// let path = lapce_ipc::socket_path("/editor-ai")?;
/// assert!(path.to_string_lossy().ends_with("editor-ai.sock") || cfg!(windows));
/// # Ok::<(), lapce_ipc::IpcError>(())
/// ```
pub fn socket_path(name: &str) -> Result<PathBuf> {
    crate::platform::control_path(checked_name(name)?)
}

/// Where the control channel of `name` lives under `config` (its `socket_dir`, checked for the
/// side that asks: the listener, or a `client`).
pub(crate) fn config_socket_path(name: &str, config: &StreamConfig, client: bool) -> Result<PathBuf> {
    crate::platform::control_path_in(
        checked_name(name)?,
        config.socket_dir.as_deref(),
        &config.allowed_peer_uids,
        client,
    )
}

/// `name` without its leading `/`, if it follows the rules of [`socket_path`].
fn checked_name(name: &str) -> Result<&str> {
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
    Ok(bare)
}

/// Removes the control-socket files that crashed listeners left in the runtime directory (a
/// file no live process accepts on) and returns their paths. A live listener's socket is never
/// removed. Binding a name already replaces its own stale file, so this is housekeeping (also
/// `lapce-ipc clean`). With the POSIX backend on Linux it also removes the shared-memory names
/// (`/dev/shm/lapce-ipc-*`) of processes killed in the instant between creating a segment and
/// unlinking its name (never one whose creator lives). On Windows there is nothing to clean:
/// pipes vanish with their process.
///
/// ```
/// # // A runtime directory of its own: the shared one holds the sockets of the tests that run
/// # // before, which this sweep would remove and so hide from CI's check for leftovers.
/// # let dir = std::env::temp_dir().join(format!("lapce-ipc-doc-clean-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir)?;
/// # std::env::set_var("XDG_RUNTIME_DIR", &dir);
/// let removed = lapce_ipc::clean_stale_sockets()?;
/// assert!(removed.iter().all(|p| !p.exists()));
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn clean_stale_sockets() -> Result<Vec<PathBuf>> {
    let removed = crate::platform::clean_stale_control_files()?;
    count_stale_cleaned(removed.len());
    Ok(removed)
}

/// Stale runtime files this process removed: sockets replaced at bind and everything
/// [`clean_stale_sockets`] removed (`lapce_ipc_stale_resources_cleaned_total`).
static STALE_CLEANED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Counts `n` stale runtime files removed.
pub(crate) fn count_stale_cleaned(n: usize) {
    STALE_CLEANED.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
}

/// Stale runtime files this process has removed so far.
pub(crate) fn stale_cleaned() -> u64 {
    STALE_CLEANED.load(std::sync::atomic::Ordering::Relaxed)
}
