//! The baseline on Unix: a Unix-domain stream socket with std blocking I/O, each message framed
//! by a 4-byte little-endian length ([`PrefixedConn`]).

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use super::measure::{self, Result};
use super::prefixed::PrefixedConn;
use super::{Mode, ServerArgs};
use crate::child::announce_ready;

/// Name of the baseline in the table and the JSON.
pub const NAME: &str = "uds";

/// One end of a framed socket connection (used by both the client and the server).
pub type Conn = PrefixedConn<UnixStream>;

/// Wraps a connected socket.
fn wrap(sock: UnixStream) -> Result<Conn> {
    let writer = sock.try_clone()?;
    Ok(PrefixedConn::new(sock, writer))
}

/// The socket path for a server named `base` (`--name` of the child), and the file to remove
/// once the server is gone (the same path).
pub fn endpoint(base: &str) -> (String, PathBuf) {
    let path = std::env::temp_dir().join(format!("{base}.sock"));
    (path.to_string_lossy().into_owned(), path)
}

/// Connects to the server socket at `path`.
pub fn connect(path: &str) -> Result<Conn> {
    let path = Path::new(path);
    let sock = UnixStream::connect(path).map_err(|e| format!("cannot connect to {}: {e}", path.display()))?;
    wrap(sock)
}

/// Removes a socket file when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs the server child: binds the socket at path `args.name`, prints `ready`, accepts one
/// client, removes the socket file and serves the test.
pub fn serve(args: &ServerArgs) -> Result<()> {
    if args.mode != Mode::Blocking {
        return Err("the uds baseline only has the blocking mode".into());
    }
    let path = PathBuf::from(&args.name);
    let listener = UnixListener::bind(&path).map_err(|e| format!("cannot bind {}: {e}", path.display()))?;
    let file = RemoveOnDrop(path);
    announce_ready()?;
    let (sock, _) = listener.accept()?;
    drop(listener);
    drop(file);
    let mut conn = wrap(sock)?;
    measure::serve_baseline(&mut conn, args.test, args.payload, args.warmup, args.count)
}
