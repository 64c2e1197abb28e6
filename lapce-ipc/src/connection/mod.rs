//! The connection layer: listeners, streams and the handshake that joins them.
//!
//! A listener owns a Unix-domain control socket in the private runtime directory (see
//! [`socket_path`]). Each accepted client gets its own shared-memory segment holding two rings
//! (one per direction) and four doorbells, passed over the socket; the socket then stays open for
//! the life of the connection so that each side learns at once when the other goes away.

mod blocking;
pub(crate) mod handshake;
mod tokio;

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use self::blocking::{SharedMemoryListener, SharedMemoryStream, StreamReceiver, StreamSender};
pub use self::tokio::{
    AsyncSharedMemoryListener, AsyncSharedMemoryStream, AsyncStreamReceiver, AsyncStreamSender,
};
pub use handshake::PROTOCOL_VERSION;

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
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            ring_capacity: 256 * 1024,
            wait: WaitStrategy::default(),
            handshake_timeout: Duration::from_secs(5),
        }
    }
}

/// The control-socket path for a listener name: `<runtime dir>/<name>.sock`.
///
/// The runtime directory is `$XDG_RUNTIME_DIR/lapce-ipc/` or `/tmp/lapce-ipc-<uid>/`, created
/// with mode 0700 and refused if another user owns it or it is open to others. Names are 1 to 100
/// characters of `[A-Za-z0-9._-]` (a leading `/`, as in `"/my_ipc"`, is ignored), do not start
/// with a dot, and must leave the whole path within the 107 bytes a Unix socket address holds.
///
/// ```
/// let path = lapce_ipc::socket_path("/editor-ai")?;
/// assert!(path.ends_with("editor-ai.sock"));
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
    let path = crate::platform::runtime_dir()?.join(format!("{bare}.sock"));
    // A Unix socket address holds at most 107 bytes of path (108 with the terminating NUL).
    if path.as_os_str().len() > 107 {
        return Err(IpcError::InvalidArgument(format!(
            "socket path {} is longer than the 107 bytes a Unix socket address holds; use a shorter name",
            path.display()
        )));
    }
    Ok(path)
}

/// Identity of the socket file a listener created, so that it removes only its own file.
type FileId = (u64, u64);

fn file_id(path: &Path) -> Option<FileId> {
    // The field types differ between platforms (macOS has a 32-bit `st_dev`).
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    rustix::fs::lstat(path).ok().map(|st| (st.st_dev as u64, st.st_ino as u64))
}

/// Binds the control socket for `name` (mode 0600), replacing a stale socket file that no live
/// listener answers on.
fn bind_control(name: &str) -> Result<(UnixListener, PathBuf, Option<FileId>)> {
    let path = socket_path(name)?;
    let bind_err = |source| IpcError::Bind { path: path.clone(), source };
    let listener = match UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            if let Ok(st) = rustix::fs::lstat(&path) {
                if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Socket {
                    return Err(IpcError::InsecurePath { path, reason: "exists and is not a socket".into() });
                }
            }
            if crate::platform::listener_alive(&path) {
                return Err(bind_err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "address in use by a live listener",
                )));
            }
            // Nobody listens: a leftover of a crashed process. Replace it.
            std::fs::remove_file(&path).map_err(bind_err)?;
            UnixListener::bind(&path).map_err(bind_err)?
        }
        Err(e) => return Err(bind_err(e)),
    };
    rustix::fs::chmod(&path, rustix::fs::Mode::from_raw_mode(0o600)).map_err(|e| bind_err(e.into()))?;
    let id = file_id(&path);
    Ok((listener, path, id))
}

/// Removes the listener's socket file if it is still the one it created.
fn unbind_control(path: &Path, id: Option<FileId>) {
    if id.is_some() && file_id(path) == id {
        let _ = std::fs::remove_file(path);
    }
}
