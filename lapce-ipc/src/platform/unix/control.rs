//! The control channel over Unix-domain stream sockets: listener, connection, hello messages
//! with descriptors attached (`SCM_RIGHTS`), the peer's credentials, and after the handshake the
//! [`PeerLink`] that reports the peer's hang-up.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
#[cfg(feature = "tokio")]
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

#[cfg(feature = "tokio")]
use tokio::io::unix::AsyncFd;
#[cfg(feature = "tokio")]
use tokio::io::Interest;

use super::backend::{watch_hangup, HangupWatch};
use super::credentials::{current_uid, peer_credentials};
use super::doorbell::Doorbell;
use super::fd_passing::{recv_with_fds, send_with_fds};
use super::runtime_dir::{
    check_private_dir, check_socket_dir, fallback_base, fallback_runtime_dir, other_boot_runtime_dirs,
    runtime_dir, xdg_runtime_dir,
};
use super::socket::{peer_hung_up, probe_listener, Listening};
use crate::error::{handshake_io, IpcError, Result};
use crate::platform::time_left;

/// What carries a segment or a doorbell to the peer: a file descriptor.
pub(crate) type OsHandle = OwnedFd;
/// A borrowed [`OsHandle`].
pub(crate) type BorrowedOsHandle<'a> = BorrowedFd<'a>;

/// The control-socket path of a (validated) listener name: `<runtime dir>/<name>.sock`.
pub(crate) fn control_path(name: &str) -> Result<PathBuf> {
    control_path_in(name, None, &[], false)
}

/// The control-socket path of a (validated) listener name in `dir` (an explicit socket
/// directory, checked by [`check_socket_dir`] with `allowed_uids`; `client` is the side that
/// asks), or in the runtime directory when `dir` is `None`.
pub(crate) fn control_path_in(
    name: &str,
    dir: Option<&Path>,
    allowed_uids: &[u32],
    client: bool,
) -> Result<PathBuf> {
    let dir = match dir {
        Some(dir) => {
            check_socket_dir(dir, allowed_uids, client)?;
            dir.to_path_buf()
        }
        None if !allowed_uids.is_empty() => {
            return Err(IpcError::InvalidArgument(format!(
                "allowed_peer_uids {allowed_uids:?} needs a socket_dir: other users cannot enter the private \
                 runtime directory, so they could never connect"
            )))
        }
        None => runtime_dir()?,
    };
    let path = dir.join(format!("{name}.sock"));
    // A Unix socket address holds at most 107 bytes of path (108 with the terminating NUL).
    if path.as_os_str().len() > 107 {
        return Err(IpcError::InvalidArgument(format!(
            "socket path {} is longer than the 107 bytes a Unix socket address holds; use a shorter name",
            path.display()
        )));
    }
    Ok(path)
}

/// Removes the socket files in the runtime directory that no live listener answers on (left by
/// crashed processes) and returns their paths. A file is removed only if it is still the one
/// that was probed (same device and inode), so a listener that binds the name meanwhile keeps
/// its socket.
///
/// Without `$XDG_RUNTIME_DIR`, also sweeps this user's runtime directories of earlier boots
/// (`/tmp/lapce-ipc-<uid>-<other boot>/`, see [`other_boot_runtime_dirs`]) the same way, and
/// removes those left empty.
pub(crate) fn clean_stale_control_files() -> Result<Vec<PathBuf>> {
    let mut removed = clean_stale_sockets_in(&runtime_dir()?)?;
    if xdg_runtime_dir().is_none() {
        let (base, uid) = (fallback_base(), current_uid());
        for dir in other_boot_runtime_dirs(&base, uid) {
            // Only a directory that is ours and private, as the runtime directory must be.
            if check_private_dir(&dir, uid).is_err() {
                continue;
            }
            let Ok(stale) = clean_stale_sockets_in(&dir) else { continue };
            removed.extend(stale);
            // The untagged directory stays: a listener that cannot read the boot tag uses it.
            if dir != fallback_runtime_dir(&base, uid, None) && std::fs::remove_dir(&dir).is_ok() {
                removed.push(dir);
            }
        }
    }
    removed.extend(super::backend::clean_stale_segments());
    Ok(removed)
}

/// Removes the socket files in `dir` that no live listener answers on.
fn clean_stale_sockets_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "sock") {
            continue;
        }
        let Ok(st) = rustix::fs::lstat(&path) else { continue };
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Socket {
            continue;
        }
        let probed = file_id(&path);
        if probe_listener(&path) == Listening::Nobody && probed.is_some() && file_id(&path) == probed {
            std::fs::remove_file(&path)?;
            removed.push(path);
        }
    }
    Ok(removed)
}

/// Identity of the socket file a listener created, so that it removes only its own file.
type FileId = (u64, u64);

fn file_id(path: &Path) -> Option<FileId> {
    // The field types differ between platforms (macOS has a 32-bit `st_dev`).
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    rustix::fs::lstat(path).ok().map(|st| (st.st_dev as u64, st.st_ino as u64))
}

/// The socket file a listener bound; removed on drop if it is still the one it created.
struct BoundPath {
    path: PathBuf,
    id: Option<FileId>,
}

impl Drop for BoundPath {
    fn drop(&mut self) {
        if self.id.is_some() && file_id(&self.path) == self.id {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A descriptor a listener keeps open to give up when the process has none left: an `accept`
/// that fails for lack of descriptors leaves the client waiting until its handshake times out,
/// so the listener closes this one, accepts the client on it, tells it why it is refused, and
/// opens this again once that connection is closed (see [`Starved`]).
struct Reserve(std::sync::Mutex<Option<OwnedFd>>);

impl Reserve {
    fn new() -> Arc<Reserve> {
        Arc::new(Reserve(std::sync::Mutex::new(Self::open())))
    }

    fn open() -> Option<OwnedFd> {
        rustix::fs::open(
            "/dev/null",
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .ok()
    }

    /// Closes the reserve descriptor; false when there was none to close.
    fn release(&self) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take().is_some()
    }

    fn restore(&self) {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Self::open();
        }
    }
}

/// A client accepted on the reserve descriptor: refuse it, then drop this (after the client's
/// socket) to open the reserve again.
pub(crate) struct Starved(Arc<Reserve>);

impl Drop for Starved {
    fn drop(&mut self) {
        self.0.restore();
    }
}

/// A client a listener accepted; `starved` is set when the process had no descriptor left and
/// the client was accepted on the listener's reserve.
pub(crate) struct Accepted<S> {
    pub(crate) stream: S,
    pub(crate) starved: Option<Starved>,
}

/// A bound control socket (blocking flavour).
pub(crate) struct ControlListener {
    sock: UnixListener,
    bound: BoundPath,
    reserve: Arc<Reserve>,
}

impl ControlListener {
    /// Binds the control socket at `path`, replacing a stale socket file that no live listener
    /// answers on. The socket is mode 0600, or 0666 when `allowed_uids` is not empty so that
    /// the allowed users can connect at all; then the kernel-reported credentials checked on
    /// every accept ([`ControlStream::check_peer`]) are what keep other users out. The directory
    /// was checked before (nobody else can write it), so the file chmod-ed is the one bound here.
    pub(crate) fn bind(path: PathBuf, allowed_uids: &[u32]) -> Result<ControlListener> {
        let bind_err = |source| IpcError::Bind { path: path.clone(), source };
        let sock = match UnixListener::bind(&path) {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                if let Ok(st) = rustix::fs::lstat(&path) {
                    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Socket {
                        return Err(IpcError::InsecurePath {
                            path,
                            reason: "exists and is not a socket".into(),
                        });
                    }
                }
                if let Listening::Alive(pid) = probe_listener(&path) {
                    let who = pid.map_or(String::new(), |pid| format!(" (pid {pid})"));
                    return Err(bind_err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!("address in use by a live listener{who}"),
                    )));
                }
                // Nobody listens: a leftover of a crashed process. Replace it.
                std::fs::remove_file(&path).map_err(bind_err)?;
                crate::connection::count_stale_cleaned(1);
                UnixListener::bind(&path).map_err(bind_err)?
            }
            Err(e) => return Err(bind_err(e)),
        };
        let mode = if allowed_uids.is_empty() { 0o600 } else { 0o666 };
        rustix::fs::chmod(&path, rustix::fs::Mode::from_raw_mode(mode)).map_err(|e| bind_err(e.into()))?;
        let id = file_id(&path);
        Ok(ControlListener { sock, bound: BoundPath { path, id }, reserve: Reserve::new() })
    }

    /// The socket file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.bound.path
    }

    /// Waits for the next client.
    pub(crate) fn accept(&self) -> io::Result<Accepted<ControlStream>> {
        match self.sock.accept() {
            Ok((sock, _)) => Ok(Accepted { stream: ControlStream { sock }, starved: None }),
            // The client is still queued (the failed accept took nothing): take it on the reserve.
            Err(e) if crate::platform::is_out_of_handles(&e) && self.reserve.release() => {
                let starved = Starved(self.reserve.clone());
                let (sock, _) = self.sock.accept()?;
                Ok(Accepted { stream: ControlStream { sock }, starved: Some(starved) })
            }
            Err(e) => Err(e),
        }
    }

    #[cfg(feature = "tokio")]
    /// The tokio flavour of this listener; must be called inside a tokio runtime.
    pub(crate) fn into_async(self) -> Result<AsyncControlListener> {
        self.sock.set_nonblocking(true)?;
        let sock = tokio::net::UnixListener::from_std(self.sock)?;
        Ok(AsyncControlListener { sock, _bound: self.bound, reserve: self.reserve })
    }
}

/// The listening socket: readable when a client waits to be accepted.
impl AsFd for ControlListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

#[cfg(feature = "tokio")]
/// The listening socket: readable when a client waits to be accepted.
impl AsFd for AsyncControlListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

#[cfg(feature = "tokio")]
/// A bound control socket (tokio flavour).
pub(crate) struct AsyncControlListener {
    sock: tokio::net::UnixListener,
    _bound: BoundPath,
    reserve: Arc<Reserve>,
}

#[cfg(feature = "tokio")]
impl AsyncControlListener {
    /// Waits for the next client.
    pub(crate) async fn accept(&self) -> io::Result<Accepted<AsyncControlStream>> {
        match self.sock.accept().await {
            Ok((sock, _)) => Ok(Accepted { stream: AsyncControlStream { sock }, starved: None }),
            // See the blocking flavour.
            Err(e) if crate::platform::is_out_of_handles(&e) && self.reserve.release() => {
                let starved = Starved(self.reserve.clone());
                let (sock, _) = self.sock.accept().await?;
                Ok(Accepted { stream: AsyncControlStream { sock }, starved: Some(starved) })
            }
            Err(e) => Err(e),
        }
    }
}

/// Refuses peers running as a user other than ours and those in `allowed_uids`; returns the
/// peer's pid as the kernel knows it.
fn check_peer(sock: impl AsFd, allowed_uids: &[u32]) -> Result<u32> {
    let (peer, pid) = peer_credentials(sock)?;
    let own = current_uid();
    if peer != own && !allowed_uids.contains(&peer) {
        return Err(IpcError::PeerRefused {
            peer_user: format!("uid {peer}"),
            own_user: format!("uid {own}"),
        });
    }
    Ok(pid)
}

/// A connected control socket during the handshake (blocking flavour).
pub(crate) struct ControlStream {
    sock: UnixStream,
}

impl ControlStream {
    /// Connects to the listener at `path`. (`_deadline`: a Unix connect does not wait for the
    /// listener; a full backlog is the one case where it may block.)
    pub(crate) fn connect(path: &Path, _deadline: Instant) -> Result<ControlStream> {
        let sock =
            UnixStream::connect(path).map_err(|source| IpcError::Connect { path: path.into(), source })?;
        Ok(ControlStream { sock })
    }

    /// Refuses a peer running as a user other than ours and those in `allowed_uids` (the uid
    /// from the kernel, not claimed); returns its pid.
    pub(crate) fn check_peer(&self, allowed_uids: &[u32]) -> Result<u32> {
        check_peer(&self.sock, allowed_uids)
    }

    /// Reads exactly `buf.len()` bytes, all of them before `deadline` (a slow trickle cannot
    /// stretch the handshake), with the descriptors that came along.
    pub(crate) fn read_exact_by(&mut self, buf: &mut [u8], deadline: Instant) -> Result<Vec<OsHandle>> {
        let mut got = 0;
        let mut fds = Vec::new();
        while got < buf.len() {
            self.sock.set_read_timeout(Some(time_left(deadline)?))?;
            match recv_with_fds(&self.sock, &mut buf[got..]) {
                Ok((0, _)) => return Err(IpcError::PeerGone),
                Ok((n, more)) => {
                    got += n;
                    fds.extend(more);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(handshake_io(e)),
            }
        }
        Ok(fds)
    }

    /// Sends `bytes` with `handles` attached, giving up at `deadline`.
    pub(crate) fn write_all_by(
        &mut self,
        bytes: &[u8],
        handles: &[BorrowedOsHandle<'_>],
        deadline: Instant,
    ) -> Result<()> {
        self.sock.set_write_timeout(Some(time_left(deadline)?))?;
        send_with_fds(&self.sock, bytes, handles).map_err(handshake_io)
    }
}

#[cfg(feature = "tokio")]
/// A connected control socket during the handshake (tokio flavour). Callers bound the whole
/// handshake with a timeout.
pub(crate) struct AsyncControlStream {
    sock: tokio::net::UnixStream,
}

#[cfg(feature = "tokio")]
impl AsyncControlStream {
    /// Connects to the listener at `path`.
    pub(crate) async fn connect(path: &Path) -> Result<AsyncControlStream> {
        let sock = tokio::net::UnixStream::connect(path)
            .await
            .map_err(|source| IpcError::Connect { path: path.into(), source })?;
        Ok(AsyncControlStream { sock })
    }

    /// See [`ControlStream::check_peer`].
    pub(crate) fn check_peer(&self, allowed_uids: &[u32]) -> Result<u32> {
        check_peer(&self.sock, allowed_uids)
    }

    /// Reads exactly `buf.len()` bytes, with the descriptors that came along.
    pub(crate) async fn read_exact(&mut self, buf: &mut [u8]) -> Result<Vec<OsHandle>> {
        let sock = &self.sock;
        let mut got = 0;
        let mut fds = Vec::new();
        while got < buf.len() {
            sock.readable().await?;
            match sock.try_io(Interest::READABLE, || recv_with_fds(sock, &mut buf[got..])) {
                Ok((0, _)) => return Err(IpcError::PeerGone),
                Ok((n, more)) => {
                    got += n;
                    fds.extend(more);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(handshake_io(e)),
            }
        }
        Ok(fds)
    }

    /// Sends `bytes` with `handles` attached.
    pub(crate) async fn write_all(&mut self, bytes: &[u8], handles: &[BorrowedOsHandle<'_>]) -> Result<()> {
        let sock = &self.sock;
        loop {
            sock.writable().await?;
            match sock.try_io(Interest::WRITABLE, || send_with_fds(sock, bytes, handles)) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(handshake_io(e)),
            }
        }
    }

    /// The same connection as a [`ControlStream`] (to become a [`PeerLink`]).
    pub(crate) fn into_blocking(self) -> Result<ControlStream> {
        Ok(ControlStream { sock: self.sock.into_std()? })
    }
}

/// The control socket of an established connection: it only tells whether the peer lives.
///
/// After the handshake nothing more is sent on it, so "readable" or "hung up" both mean the
/// peer is gone. Dropping the link shuts the socket down, which the peer hears at once even if
/// a duplicate of the descriptor lingers somewhere.
pub(crate) struct PeerLink {
    sock: UnixStream,
    watch: HangupWatch,
}

impl PeerLink {
    /// `on_hangup` runs once, on the hang-up watcher thread, as soon as the peer hangs up
    /// (backends with [`HAS_HANGUP_WATCHER`](super::HAS_HANGUP_WATCHER)); elsewhere it is dropped
    /// and sleepers watch the link themselves.
    pub(crate) fn new(stream: ControlStream, on_hangup: Box<dyn FnOnce() + Send>) -> Result<PeerLink> {
        let sock = stream.sock;
        sock.set_nonblocking(true)?;
        let watch = watch_hangup(sock.as_fd(), on_hangup)?;
        Ok(PeerLink { sock, watch })
    }

    /// True once the peer has hung up (or sent anything, which no live peer does). Never blocks.
    pub(crate) fn hung_up(&self) -> bool {
        peer_hung_up(&self.sock)
    }
}

impl Drop for PeerLink {
    fn drop(&mut self) {
        // Before the socket closes: the watcher holds no descriptor of its own.
        self.watch.cancel(self.sock.as_fd());
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
    }
}

/// Sleeps until `bell` is rung or the peer goes, for at most `timeout`. The blocking sleep of
/// backends without a futex; `Ok` says nothing, the caller re-checks.
pub(crate) fn sleep_blocking(bell: &Doorbell, link: &PeerLink, timeout: Option<Duration>) -> Result<()> {
    bell.sleep_blocking(&link.sock, timeout)
}

#[cfg(feature = "tokio")]
/// Ready when the peer rang `bell` (or closed its end: [`IpcError::PeerGone`]); else registers
/// `cx`'s waker and is pending. The link needs no watching here: a peer that goes closes its
/// doorbell ends too.
pub(crate) fn poll_sleep(bell: &mut Doorbell, _link: &PeerLink, cx: &mut Context<'_>) -> Poll<Result<()>> {
    bell.poll_sleep(cx)
}

#[cfg(feature = "tokio")]
/// Waits in tokio for the peer's hang-up alone, for backends without a hang-up watcher (where
/// nothing else would notice it while no wait is under way). Registers the link's own socket
/// (no duplicate): one watch per link at a time.
pub(crate) struct AsyncHangupWatch<'a> {
    link: AsyncFd<BorrowedFd<'a>>,
}

#[cfg(feature = "tokio")]
impl<'a> AsyncHangupWatch<'a> {
    /// Registers the link's socket with the current tokio reactor.
    pub(crate) fn new(link: &'a PeerLink) -> Result<AsyncHangupWatch<'a>> {
        // SAFETY: the borrow keeps the socket open, with the same number, for as long as the
        // registration lives; the link registers it with no tokio reactor otherwise, and the
        // one caller (`Link::hung_up`) makes one watch at a time per link.
        let registered = unsafe { AsyncFd::register_with_interest(link.sock.as_fd(), Interest::READABLE) };
        Ok(AsyncHangupWatch { link: registered.map_err(|e| e.into_parts().1)? })
    }

    /// Resolves once the peer has hung up.
    pub(crate) async fn hung_up(&self) -> Result<()> {
        loop {
            let mut guard = self.link.readable().await?;
            if peer_hung_up(self.link.get_ref()) {
                return Ok(());
            }
            guard.clear_ready();
        }
    }
}
