//! The control channel over a named pipe: listener, connection, hello messages with handles
//! attached, and after the handshake the [`PeerLink`] whose pending read reports the peer's
//! hang-up.
//!
//! Every pipe handle is opened for overlapped I/O and every operation waits on an event, with a
//! deadline (blocking flavour) or through the thread pool (async flavour). An operation that is
//! abandoned (deadline, dropped future) is cancelled, and its cancellation waited for, before
//! its buffer or `OVERLAPPED` can be freed. Windows cancels a thread's pending I/O when the
//! thread exits: handshake operations are waited for by the thread that starts them (an async
//! accept or handshake pending on a runtime thread that exits fails with "operation aborted"),
//! and the link's long-lived read is started by a dedicated thread (see [`PeerLink`]).
//!
//! Wire format difference with Unix: a message is its bytes, then an 8-byte trailer header
//! (handle count `u32` LE, reserved `u32`), then one `u64` LE per handle: the value of a handle
//! the sender has already duplicated into the receiver's process (docs/PROTOCOL.md §2).

mod link;
mod overlapped;

use std::io;
use std::os::windows::ffi::OsStrExt;
use std::os::windows::io::{AsHandle, AsRawHandle, FromRawHandle, OwnedHandle};
use std::path::{Path, PathBuf};
use std::ptr::{null, null_mut};
use std::time::{Duration, Instant};

use windows_sys::Win32::Foundation::{
    DuplicateHandle, DUPLICATE_SAME_ACCESS, ERROR_ACCESS_DENIED, ERROR_FILE_NOT_FOUND, ERROR_PIPE_BUSY,
    GENERIC_READ, GENERIC_WRITE, HANDLE,
};
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, FILE_FLAG_FIRST_PIPE_INSTANCE, FILE_FLAG_OVERLAPPED, OPEN_EXISTING, PIPE_ACCESS_DUPLEX,
    SECURITY_IDENTIFICATION, SECURITY_SQOS_PRESENT,
};
use windows_sys::Win32::System::Pipes::{
    CreateNamedPipeW, GetNamedPipeClientProcessId, GetNamedPipeServerProcessId, WaitNamedPipeW,
    PIPE_READMODE_BYTE, PIPE_REJECT_REMOTE_CLIENTS, PIPE_TYPE_BYTE, PIPE_UNLIMITED_INSTANCES, PIPE_WAIT,
};
use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcess, PROCESS_DUP_HANDLE};

use super::security::{check_same_user, user_tag};
use super::{owned, BorrowedOsHandle, OsHandle};
use crate::error::{handshake_io, IpcError, Result};
use crate::platform::time_left;
pub(crate) use link::PeerLink;
use overlapped::{Op, Overlapped, Pending};

/// Most handles one control message may carry.
const MAX_HANDLES: usize = 8;
/// Pipe buffer sizes: hellos are tiny.
const PIPE_BUFFER: u32 = 4096;

/// The pipe name of a (validated) listener name: `\\.\pipe\lapce-ipc-<user tag>-<name>`, where
/// the tag is derived from this user's SID so that users never share a name.
pub(crate) fn control_path(name: &str) -> Result<PathBuf> {
    Ok(PathBuf::from(format!(r"\\.\pipe\lapce-ipc-{}-{name}", user_tag()?)))
}

/// [`control_path`]; `socket_dir` and `allowed_uids` are Unix options, refused here.
pub(crate) fn control_path_in(
    name: &str,
    dir: Option<&Path>,
    allowed_uids: &[u32],
    _client: bool,
) -> Result<PathBuf> {
    unix_only(allowed_uids)?;
    if let Some(dir) = dir {
        return Err(IpcError::InvalidArgument(format!(
            "socket_dir ({}) is a Unix option; on Windows the control channel is a named pipe",
            dir.display()
        )));
    }
    control_path(name)
}

/// Refuses a non-empty allow-list of Unix uids.
fn unix_only(allowed_uids: &[u32]) -> Result<()> {
    if allowed_uids.is_empty() {
        return Ok(());
    }
    Err(IpcError::InvalidArgument(
        "allowed_uids is a Unix option; on Windows the trust boundary is the user account".into(),
    ))
}

fn wide(path: &Path) -> Vec<u16> {
    path.as_os_str().encode_wide().chain(Some(0)).collect()
}

/// Creates one instance of the listener's pipe, opened for overlapped I/O and local clients only.
fn pipe_instance(name: &[u16], first: bool) -> io::Result<OwnedHandle> {
    let first = if first { FILE_FLAG_FIRST_PIPE_INSTANCE } else { 0 };
    // SAFETY: `name` is NUL-terminated UTF-16; null security attributes give the default DACL
    // (full control to the creator owner and administrators, read-only for everyone else, so
    // other users cannot open it read-write); the result is checked by `owned`.
    owned(unsafe {
        CreateNamedPipeW(
            name.as_ptr(),
            PIPE_ACCESS_DUPLEX | FILE_FLAG_OVERLAPPED | first,
            PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT | PIPE_REJECT_REMOTE_CLIENTS,
            PIPE_UNLIMITED_INSTANCES,
            PIPE_BUFFER,
            PIPE_BUFFER,
            0,
            null(),
        )
    })
}

/// The pipe instance waiting for the next client.
struct NextPipe {
    pipe: OwnedHandle,
    io: Box<Overlapped>,
}

/// A bound pipe name (blocking flavour). The pipe disappears with the last handle of it, so a
/// crashed listener leaves nothing behind.
pub(crate) struct ControlListener {
    path: PathBuf,
    name: Vec<u16>,
    next: std::sync::Mutex<NextPipe>,
}

impl ControlListener {
    /// Creates the first instance of the pipe; fails if the name is taken (by a live listener:
    /// pipes vanish with their processes).
    pub(crate) fn bind(path: PathBuf, allowed_uids: &[u32]) -> Result<ControlListener> {
        unix_only(allowed_uids)?;
        let name = wide(&path);
        // FILE_FLAG_FIRST_PIPE_INSTANCE refuses a taken name on Windows; Wine ignores the flag,
        // so ask first whether the name exists (this does not connect to its listener).
        // SAFETY: `name` is NUL-terminated UTF-16.
        let exists = unsafe { WaitNamedPipeW(name.as_ptr(), 1) } != 0
            || io::Error::last_os_error().raw_os_error() != Some(ERROR_FILE_NOT_FOUND as i32);
        if exists {
            let source = io::Error::new(io::ErrorKind::AddrInUse, "address in use by a live listener");
            return Err(IpcError::Bind { path, source });
        }
        let pipe = pipe_instance(&name, true).map_err(|e| {
            let source = if e.raw_os_error() == Some(ERROR_ACCESS_DENIED as i32) {
                io::Error::new(io::ErrorKind::AddrInUse, "address in use by a live listener")
            } else {
                e
            };
            IpcError::Bind { path: path.clone(), source }
        })?;
        let next = NextPipe { pipe, io: Overlapped::new()? };
        Ok(ControlListener { path, name, next: std::sync::Mutex::new(next) })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for the next client.
    pub(crate) fn accept(&self) -> io::Result<Accepted<ControlStream>> {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let NextPipe { pipe, io } = &mut *next;
        Pending::start(pipe.as_handle(), io, Op::Connect)?.wait(None)?;
        let fresh = NextPipe { pipe: pipe_instance(&self.name, false)?, io: Overlapped::new()? };
        let connected = std::mem::replace(&mut *next, fresh);
        let stream = ControlStream::new(connected.pipe, connected.io, Side::Server)?;
        Ok(Accepted { stream, starved: None })
    }

    /// The tokio flavour of this listener.
    pub(crate) fn into_async(self) -> Result<AsyncControlListener> {
        let next = self.next.into_inner().unwrap_or_else(|p| p.into_inner());
        Ok(AsyncControlListener { name: self.name, next: tokio::sync::Mutex::new(next) })
    }
}

/// A bound pipe name (tokio flavour).
pub(crate) struct AsyncControlListener {
    name: Vec<u16>,
    next: tokio::sync::Mutex<NextPipe>,
}

impl AsyncControlListener {
    /// Waits for the next client. Cancel-safe: a dropped accept cancels the pending connect and
    /// the next call starts another on the same pipe instance.
    pub(crate) async fn accept(&self) -> io::Result<Accepted<AsyncControlStream>> {
        let mut next = self.next.lock().await;
        let NextPipe { pipe, io } = &mut *next;
        Pending::start(pipe.as_handle(), io, Op::Connect)?.wait_async().await?;
        let fresh = NextPipe { pipe: pipe_instance(&self.name, false)?, io: Overlapped::new()? };
        let connected = std::mem::replace(&mut *next, fresh);
        let stream =
            AsyncControlStream { inner: ControlStream::new(connected.pipe, connected.io, Side::Server)? };
        Ok(Accepted { stream, starved: None })
    }
}

/// A client a listener accepted. (`starved` is for the Unix backends, which keep a descriptor in
/// reserve for clients that come when the process has none left; handles are not so scarce.)
pub(crate) struct Accepted<S> {
    pub(crate) stream: S,
    pub(crate) starved: Option<std::convert::Infallible>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Server,
    Client,
}

/// A connected pipe during the handshake (blocking flavour).
pub(crate) struct ControlStream {
    pipe: OwnedHandle,
    io: Box<Overlapped>,
    /// The peer's pid as the pipe reports it.
    peer_pid: u32,
}

impl ControlStream {
    fn new(pipe: OwnedHandle, io: Box<Overlapped>, side: Side) -> io::Result<ControlStream> {
        let mut pid = 0u32;
        // SAFETY: `pipe` is a live, connected pipe handle; `pid` is a live u32.
        let ok = unsafe {
            match side {
                Side::Server => GetNamedPipeClientProcessId(pipe.as_raw_handle(), &mut pid),
                Side::Client => GetNamedPipeServerProcessId(pipe.as_raw_handle(), &mut pid),
            }
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(ControlStream { pipe, io, peer_pid: pid })
    }

    /// Connects to the listener's pipe, waiting while all its instances are busy (until
    /// `deadline`).
    pub(crate) fn connect(path: &Path, deadline: Instant) -> Result<ControlStream> {
        let name = wide(path);
        loop {
            match open_pipe(&name) {
                Ok(pipe) => return Ok(ControlStream::new(pipe, Overlapped::new()?, Side::Client)?),
                Err(e) if e.raw_os_error() == Some(ERROR_PIPE_BUSY as i32) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err(source) => return Err(connect_error(path, source)),
            }
        }
    }

    /// Refuses a peer running as another user; returns its pid. (`allowed_uids` must be empty.)
    pub(crate) fn check_peer(&self, allowed_uids: &[u32]) -> Result<u32> {
        unix_only(allowed_uids)?;
        check_same_user(self.peer_pid)?;
        Ok(self.peer_pid)
    }

    fn read_raw(&mut self, buf: &mut [u8], deadline: Option<Instant>) -> Result<()> {
        let mut got = 0;
        while got < buf.len() {
            let timeout = deadline.map(time_left).transpose()?;
            let op = Pending::start(self.pipe.as_handle(), &mut self.io, Op::Read(&mut buf[got..]));
            match op.and_then(|p| p.wait(timeout)) {
                Ok(0) => return Err(IpcError::PeerGone),
                Ok(n) => got += n,
                Err(e) => return Err(pipe_error(e)),
            }
        }
        Ok(())
    }

    fn write_raw(&mut self, bytes: &[u8], deadline: Instant) -> Result<()> {
        let mut sent = 0;
        while sent < bytes.len() {
            let timeout = Some(time_left(deadline)?);
            let op = Pending::start(self.pipe.as_handle(), &mut self.io, Op::Write(&bytes[sent..]));
            match op.and_then(|p| p.wait(timeout)) {
                Ok(0) => return Err(IpcError::PeerGone),
                Ok(n) => sent += n,
                Err(e) => return Err(pipe_error(e)),
            }
        }
        Ok(())
    }

    /// Reads exactly `buf.len()` bytes and the handles that came along, before `deadline`.
    pub(crate) fn read_exact_by(&mut self, buf: &mut [u8], deadline: Instant) -> Result<Vec<OsHandle>> {
        self.read_raw(buf, Some(deadline))?;
        let mut head = [0u8; 8];
        self.read_raw(&mut head, Some(deadline))?;
        let count = handle_count(&head)?;
        let mut values = vec![0u8; 8 * count];
        self.read_raw(&mut values, Some(deadline))?;
        Ok(adopt_handles(&values))
    }

    /// Sends `bytes` with `handles` duplicated into the peer, giving up at `deadline`.
    pub(crate) fn write_all_by(
        &mut self,
        bytes: &[u8],
        handles: &[BorrowedOsHandle<'_>],
        deadline: Instant,
    ) -> Result<()> {
        let msg = self.message(bytes, handles)?;
        self.write_raw(&msg, deadline)
    }

    /// `bytes`, the trailer header and the values of `handles` duplicated into the peer process.
    fn message(&self, bytes: &[u8], handles: &[BorrowedOsHandle<'_>]) -> Result<Vec<u8>> {
        assert!(handles.len() <= MAX_HANDLES);
        let mut msg = Vec::with_capacity(bytes.len() + 8 + 8 * handles.len());
        msg.extend_from_slice(bytes);
        msg.extend_from_slice(&(handles.len() as u32).to_le_bytes());
        msg.extend_from_slice(&0u32.to_le_bytes());
        if !handles.is_empty() {
            // SAFETY: plain call; the result is checked by `owned`.
            let peer = owned(unsafe { OpenProcess(PROCESS_DUP_HANDLE, 0, self.peer_pid) })?;
            for h in handles {
                let mut theirs: HANDLE = null_mut();
                // SAFETY: `h` is live (borrowed); `peer` is a live process handle with
                // PROCESS_DUP_HANDLE; `theirs` is a live out-pointer. The duplicate belongs to the
                // peer process (if our message never arrives, it dies with that process).
                let ok = unsafe {
                    DuplicateHandle(
                        GetCurrentProcess(),
                        h.as_raw_handle(),
                        peer.as_raw_handle(),
                        &mut theirs,
                        0,
                        0,
                        DUPLICATE_SAME_ACCESS,
                    )
                };
                if ok == 0 {
                    return Err(io::Error::last_os_error().into());
                }
                msg.extend_from_slice(&(theirs as usize as u64).to_le_bytes());
            }
        }
        Ok(msg)
    }
}

/// Opens the client end of a pipe, for overlapped I/O, allowing the server only to identify us
/// (not to impersonate us).
fn open_pipe(name: &[u16]) -> io::Result<OwnedHandle> {
    // SAFETY: `name` is NUL-terminated UTF-16; the result is checked by `owned`.
    owned(unsafe {
        CreateFileW(
            name.as_ptr(),
            GENERIC_READ | GENERIC_WRITE,
            0,
            null(),
            OPEN_EXISTING,
            FILE_FLAG_OVERLAPPED | SECURITY_SQOS_PRESENT | SECURITY_IDENTIFICATION,
            null_mut(),
        )
    })
}

fn connect_error(path: &Path, source: io::Error) -> IpcError {
    let source = if source.raw_os_error() == Some(ERROR_FILE_NOT_FOUND as i32) {
        io::Error::new(io::ErrorKind::NotFound, "no listener on this pipe name")
    } else {
        source
    };
    IpcError::Connect { path: path.into(), source }
}

/// Pipe errors during a handshake: a closed pipe is the peer gone, a deadline a timeout.
fn pipe_error(e: io::Error) -> IpcError {
    use windows_sys::Win32::Foundation::{ERROR_BROKEN_PIPE, ERROR_NO_DATA, ERROR_PIPE_NOT_CONNECTED};
    match e.raw_os_error().map(|c| c as u32) {
        Some(ERROR_BROKEN_PIPE | ERROR_NO_DATA | ERROR_PIPE_NOT_CONNECTED) => IpcError::PeerGone,
        _ => handshake_io(e),
    }
}

fn handle_count(head: &[u8; 8]) -> Result<usize> {
    let count = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
    if count > MAX_HANDLES {
        return Err(IpcError::Handshake(format!("peer announced {count} handles (at most {MAX_HANDLES})")));
    }
    Ok(count)
}

/// Takes ownership of handles the peer duplicated into this process.
fn adopt_handles(values: &[u8]) -> Vec<OsHandle> {
    values
        .chunks_exact(8)
        .map(|v| {
            let raw = u64::from_le_bytes(v.try_into().expect("8 bytes")) as usize as HANDLE;
            // SAFETY: the peer duplicated this handle into our process for us, and nothing else
            // in this process knows its value: we are its only owner. (A peer lying about the
            // value is a same-user process, which could do anything to us anyway; see mod.rs.)
            unsafe { OwnedHandle::from_raw_handle(raw) }
        })
        .collect()
}

/// A connected pipe during the handshake (tokio flavour). Callers bound the whole handshake
/// with a timeout; an abandoned operation is cancelled by [`Pending`].
pub(crate) struct AsyncControlStream {
    inner: ControlStream,
}

impl AsyncControlStream {
    /// Connects to the listener's pipe, waiting while all its instances are busy.
    pub(crate) async fn connect(path: &Path) -> Result<AsyncControlStream> {
        let name = wide(path);
        loop {
            match open_pipe(&name) {
                Ok(pipe) => {
                    let inner = ControlStream::new(pipe, Overlapped::new()?, Side::Client)?;
                    return Ok(AsyncControlStream { inner });
                }
                Err(e) if e.raw_os_error() == Some(ERROR_PIPE_BUSY as i32) => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(source) => return Err(connect_error(path, source)),
            }
        }
    }

    pub(crate) fn check_peer(&self, allowed_uids: &[u32]) -> Result<u32> {
        self.inner.check_peer(allowed_uids)
    }

    async fn read_raw(&mut self, buf: &mut [u8]) -> Result<()> {
        let s = &mut self.inner;
        let mut got = 0;
        while got < buf.len() {
            let op = Pending::start(s.pipe.as_handle(), &mut s.io, Op::Read(&mut buf[got..]));
            let r = match op {
                Ok(p) => p.wait_async().await,
                Err(e) => Err(e),
            };
            match r {
                Ok(0) => return Err(IpcError::PeerGone),
                Ok(n) => got += n,
                Err(e) => return Err(pipe_error(e)),
            }
        }
        Ok(())
    }

    /// Reads exactly `buf.len()` bytes and the handles that came along.
    pub(crate) async fn read_exact(&mut self, buf: &mut [u8]) -> Result<Vec<OsHandle>> {
        self.read_raw(buf).await?;
        let mut head = [0u8; 8];
        self.read_raw(&mut head).await?;
        let count = handle_count(&head)?;
        let mut values = vec![0u8; 8 * count];
        self.read_raw(&mut values).await?;
        Ok(adopt_handles(&values))
    }

    /// Sends `bytes` with `handles` duplicated into the peer.
    pub(crate) async fn write_all(&mut self, bytes: &[u8], handles: &[BorrowedOsHandle<'_>]) -> Result<()> {
        let msg = self.inner.message(bytes, handles)?;
        let s = &mut self.inner;
        let mut sent = 0;
        while sent < msg.len() {
            let op = Pending::start(s.pipe.as_handle(), &mut s.io, Op::Write(&msg[sent..]));
            let r = match op {
                Ok(p) => p.wait_async().await,
                Err(e) => Err(e),
            };
            match r {
                Ok(0) => return Err(IpcError::PeerGone),
                Ok(n) => sent += n,
                Err(e) => return Err(pipe_error(e)),
            }
        }
        Ok(())
    }

    pub(crate) fn into_blocking(self) -> Result<ControlStream> {
        Ok(self.inner)
    }
}
