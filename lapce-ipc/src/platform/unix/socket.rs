//! Unix-domain socket plumbing shared by every Unix backend: message + file-descriptor passing
//! (SCM_RIGHTS), peer credentials, hang-up probes, socket pairs, the shared-memory
//! [`Segment`] over a backend's descriptor, and the private runtime directory.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::event::{poll, PollFd};
use rustix::fs::{FileType, Mode};
use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, SendAncillaryBuffer, SendAncillaryMessage,
};

use crate::error::{IpcError, Result};

/// Most file descriptors one control message may carry.
const MAX_FDS: usize = 8;

/// Sends `bytes` and `fds` in one message. The socket must be connected.
pub(crate) fn send_with_fds(
    sock: impl AsFd,
    bytes: &[u8],
    fds: &[std::os::fd::BorrowedFd<'_>],
) -> io::Result<()> {
    assert!(fds.len() <= MAX_FDS);
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other("control buffer too small for the fds"));
    }
    let n = sendmsg(sock, &[IoSlice::new(bytes)], &mut control, os::SEND)?;
    if n != bytes.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short control message"));
    }
    Ok(())
}

/// Receives one message into `buf` and up to [`MAX_FDS`] descriptors. Returns the byte count
/// (0 means the peer closed) and the descriptors, which are close-on-exec.
pub(crate) fn recv_with_fds(sock: impl AsFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = recvmsg(sock, &mut [IoSliceMut::new(buf)], &mut control, os::RECV_FDS)?;
    let mut fds = Vec::new();
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = m {
            fds.extend(received);
        }
    }
    for fd in &fds {
        os::after_receive(fd)?;
    }
    if msg.flags.contains(rustix::net::ReturnFlags::CTRUNC) {
        return Err(io::Error::other(
            "control message truncated: descriptors were dropped (is this process at its open-file limit, RLIMIT_NOFILE?)",
        ));
    }
    Ok((msg.bytes, fds))
}

/// A shared-memory segment mapped read-write into this process; the backend decides what kind
/// of descriptor backs it ([`new_segment_fd`](super::backend::new_segment_fd)) and what a
/// received one must satisfy ([`check_segment_fd`](super::backend::check_segment_fd)). The
/// mapping lives as long as the value; it needs no descriptor, so whoever holds one (to pass it
/// on) decides how long to keep it.
pub(crate) struct Segment {
    map: memmap2::MmapRaw,
}

impl Segment {
    /// Creates a zero-filled segment of `len` bytes: its mapping and its descriptor. `label`
    /// helps debugging where the backend can show it.
    pub(crate) fn create(label: &str, len: usize) -> Result<(Segment, OwnedFd)> {
        if len == 0 {
            return Err(IpcError::InvalidArgument("segment length must be > 0".into()));
        }
        let fd = super::backend::new_segment_fd(label, len)?;
        Ok((Self::map(fd.as_fd(), len)?, fd))
    }

    /// Maps a segment received from a peer, after the backend's checks and a check that it has
    /// exactly the size the handshake announced.
    pub(crate) fn open(fd: BorrowedFd<'_>, expected_len: usize) -> Result<Segment> {
        super::backend::check_segment_fd(fd)?;
        let len = Self::size_of(fd)?;
        if len != expected_len {
            return Err(IpcError::Handshake(format!(
                "segment is {len} bytes, handshake announced {expected_len}"
            )));
        }
        Self::map(fd, expected_len)
    }

    /// The size of a segment received from a peer, before opening it.
    pub(crate) fn size_of(fd: BorrowedFd<'_>) -> Result<usize> {
        let st = rustix::fs::fstat(fd).map_err(io::Error::from)?;
        usize::try_from(st.st_size).map_err(|_| IpcError::Handshake("segment has a negative size".into()))
    }

    fn map(fd: BorrowedFd<'_>, len: usize) -> Result<Segment> {
        let map = memmap2::MmapOptions::new().len(len).map_raw(&fd)?;
        Ok(Segment { map })
    }

    /// Start of the mapping. Valid for [`Segment::len`] bytes while `self` lives.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    /// Length of the mapping in bytes.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

// SAFETY: `base()` is the start of a live `MAP_SHARED` read-write mapping of exactly `len()`
// bytes (mmap returns page-aligned addresses) that is unmapped only when the `Segment` drops.
// With the Linux backend the memfd is sealed against shrinking, so the pages can never disappear
// under the mapping; the POSIX backend cannot seal (a hostile peer shrinking the object could
// make accesses fault, as documented on its `new_segment_fd`). The crate never forms Rust
// references to the mapped bytes except atomics and the record slices the ring hands out.
unsafe impl crate::ring::SharedRegion for Segment {
    fn base(&self) -> *mut u8 {
        self.as_ptr()
    }
    fn len(&self) -> usize {
        Segment::len(self)
    }
    fn discard(&self, offset: usize, len: usize) {
        discard_pages(self, offset, len);
    }
}

/// Frees the pages wholly inside `offset..offset + len` of a segment (Linux: `MADV_REMOVE`,
/// which punches a hole in the memfd or tmpfs object, so the memory goes back to the kernel for
/// both processes, and the range reads as zeros until written again).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn discard_pages(segment: &Segment, offset: usize, len: usize) {
    const PAGE: usize = 4096;
    let start = offset.next_multiple_of(PAGE);
    let end = offset.saturating_add(len).min(segment.len()) / PAGE * PAGE;
    if end <= start {
        return;
    }
    // SAFETY: `start..end` lies inside this segment's live shared mapping (clamped to its
    // length above) and is page aligned. MADV_REMOVE changes no mapping: it only replaces the
    // range's contents with zero pages, which is defined for any bytes; the ring calls this
    // only for bytes that its side owns and no longer needs, and the crate holds no Rust
    // reference into them (only raw pointers and atomics).
    let freed = unsafe {
        rustix::mm::madvise(segment.as_ptr().add(start).cast(), end - start, rustix::mm::Advice::LinuxRemove)
    };
    if let Err(e) = freed {
        tracing::debug!(error = %e, "could not give idle ring pages back to the kernel");
    }
}

/// Elsewhere (macOS) shared pages cannot be freed while mapped: nothing to do.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn discard_pages(_segment: &Segment, _offset: usize, _len: usize) {}

/// Who listens on a Unix socket path (see [`probe_listener`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listening {
    /// Nobody: the file is missing or a leftover of a process that is gone.
    Nobody,
    /// A live process, with its pid when the kernel tells it.
    Alive(Option<u32>),
}

/// Whether a process listens on the Unix socket at `path`, and which. Never blocks: a listener
/// whose backlog is full counts as alive. Only "connection refused" (or no file) means nobody
/// listens; any other doubt answers alive, so a caller never removes a live listener's socket.
/// (A successful probe is a connection the listener accepts and sees close at once.)
pub(crate) fn probe_listener(path: &std::path::Path) -> Listening {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketType};
    let Ok(sock) = rustix::net::socket_with(AddressFamily::UNIX, SocketType::STREAM, os::SOCKET, None) else {
        return Listening::Alive(None);
    };
    if os::after_socket(&sock).is_err() {
        return Listening::Alive(None);
    }
    let Ok(addr) = SocketAddrUnix::new(path) else {
        return Listening::Alive(None);
    };
    match rustix::net::connect(&sock, &addr) {
        Err(rustix::io::Errno::CONNREFUSED | rustix::io::Errno::NOENT) => Listening::Nobody,
        Ok(()) => Listening::Alive(peer_credentials(&sock).ok().map(|(_, pid)| pid).filter(|&pid| pid != 0)),
        Err(_) => Listening::Alive(None),
    }
}

/// The user id and process id of the process at the other end of a connected Unix socket, as
/// the kernel recorded them at connect time (SO_PEERCRED): not something the peer can claim.
pub(crate) fn peer_credentials(sock: impl AsFd) -> io::Result<(u32, u32)> {
    os::peer_credentials(sock.as_fd())
}

/// This process's real user id.
pub(crate) fn current_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// This process's id.
pub(crate) fn current_pid() -> u32 {
    rustix::process::getpid().as_raw_nonzero().get() as u32
}

/// True when the peer of this connected socket has closed it or died. Never blocks.
///
/// After the handshake nothing more is sent on the control socket, so "readable" or
/// "hung up" both mean the peer is gone (a live peer that sends stray bytes is treated as a
/// protocol violation and gone too).
pub(crate) fn peer_hung_up(sock: impl AsFd) -> bool {
    let mut fds = [PollFd::new(&sock, os::HANG_UP)];
    let zero = rustix::event::Timespec { tv_sec: 0, tv_nsec: 0 };
    match poll(&mut fds, Some(&zero)) {
        Ok(0) => false,
        Ok(_) => !fds[0].revents().is_empty(),
        Err(_) => true,
    }
}

/// The private per-user runtime directory: `$XDG_RUNTIME_DIR/lapce-ipc/` (a per-user tmpfs the
/// login manager empties at logout and every boot), else `/tmp/lapce-ipc-<uid>-<boot>/`, where
/// `<boot>` tells this boot from earlier ones ([`boot_tag`]; left out where it cannot be read)
/// and `$LAPCE_IPC_TMPDIR` replaces `/tmp` when set (like tmux's `TMUX_TMPDIR`). Created with
/// mode 0700 if missing; refused when it is a symlink, not a directory, owned by someone else
/// or accessible by group/others.
pub(crate) fn runtime_dir() -> Result<PathBuf> {
    let uid = current_uid();
    let dir = match xdg_runtime_dir() {
        Some(base) => base.join("lapce-ipc"),
        None => fallback_runtime_dir(&fallback_base(), uid, boot_tag()),
    };
    checked_private_dir(dir, uid)
}

/// `$XDG_RUNTIME_DIR`, when set.
pub(crate) fn xdg_runtime_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// Where the runtime directory is made without `$XDG_RUNTIME_DIR`: `$LAPCE_IPC_TMPDIR`, else
/// `/tmp` (never `$TMPDIR`: a listener and its clients must agree on it, and `TMPDIR` differs
/// between environments of one user more often than not).
pub(crate) fn fallback_base() -> PathBuf {
    std::env::var_os("LAPCE_IPC_TMPDIR")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("/tmp"), PathBuf::from)
}

/// The runtime directory under `base` of user `uid` in the boot tagged `boot`.
pub(crate) fn fallback_runtime_dir(base: &Path, uid: u32, boot: Option<&str>) -> PathBuf {
    match boot {
        Some(boot) => base.join(format!("lapce-ipc-{uid}-{boot}")),
        None => base.join(format!("lapce-ipc-{uid}")),
    }
}

/// The runtime directories under `base` of user `uid` from other boots (and the untagged one of
/// releases before the boot tag): nothing in them can belong to a live listener of this boot,
/// except a listener that put its sockets in the untagged one because it could not read the
/// boot tag, which is why their sockets are probed before removal like any other.
pub(crate) fn other_boot_runtime_dirs(base: &Path, uid: u32) -> Vec<PathBuf> {
    let own = fallback_runtime_dir(base, uid, boot_tag());
    let Ok(entries) = std::fs::read_dir(base) else { return Vec::new() };
    let untagged = format!("lapce-ipc-{uid}");
    entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name == untagged
                || name
                    .strip_prefix(&untagged)
                    .and_then(|rest| rest.strip_prefix('-'))
                    .is_some_and(is_boot_tag)
        })
        .map(|e| e.path())
        .filter(|p| *p != own)
        .collect()
}

/// Whether `s` has the shape of a [`boot_tag`]: 8 lower-case hex digits.
fn is_boot_tag(s: &str) -> bool {
    s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A short tag of the current boot (8 hex digits), read once: on Linux the start of the kernel's
/// random `boot_id`, on macOS and the BSDs the boot time (`kern.boottime`) in seconds. `None`
/// where it cannot be read.
pub(crate) fn boot_tag() -> Option<&'static str> {
    static TAG: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    TAG.get_or_init(read_boot_tag).as_deref()
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn read_boot_tag() -> Option<String> {
    // A UUID such as "0f1e2d3c-...", new at every boot.
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let tag = id.trim().get(..8)?.to_ascii_lowercase();
    is_boot_tag(&tag).then_some(tag)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn read_boot_tag() -> Option<String> {
    let secs = os::boot_time_secs()?;
    Some(format!("{:08x}", secs as u32))
}

/// Creates `dir` with mode 0700 if it is missing, then checks it is a real directory that `uid`
/// owns and nobody else may enter.
fn checked_private_dir(dir: PathBuf, uid: u32) -> Result<PathBuf> {
    match rustix::fs::mkdir(&dir, Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => {
            return Err(IpcError::Bind { path: dir, source: e.into() });
        }
    }
    check_private_dir(&dir, uid)?;
    Ok(dir)
}

/// Checks that `dir` is a real directory that `uid` owns and nobody else may enter.
pub(crate) fn check_private_dir(dir: &Path, uid: u32) -> Result<()> {
    let st =
        rustix::fs::lstat(dir).map_err(|e| IpcError::Bind { path: dir.to_path_buf(), source: e.into() })?;
    let insecure = |reason: String| Err(IpcError::InsecurePath { path: dir.to_path_buf(), reason });
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return insecure("not a directory (symlinks are refused)".into());
    }
    if st.st_uid != uid {
        return insecure(format!("owned by uid {}, not by us (uid {uid})", st.st_uid));
    }
    if st.st_mode & 0o077 != 0 {
        return insecure(format!(
            "mode {:o} gives access to group or others (want 0700)",
            st.st_mode & 0o777
        ));
    }
    Ok(())
}

/// Checks an explicit socket directory (`StreamConfig::socket_dir`) before a socket is bound or
/// connected in it; never creates it. It must be an absolute path to an existing directory, not
/// a symlink, owned by us (a client also trusts a directory owned by one of `allowed_uids`),
/// never writable by group or others, and 0700-tight like the runtime directory when
/// `allowed_uids` is empty. Every refusal is an [`IpcError::InsecurePath`] naming the directory
/// and what is wrong.
///
/// Why these rules: nobody else may create, replace or rename entries in the directory (so the
/// socket a listener binds, and later chmods, is its own, and the one a client connects to is
/// the listener's), and other users may only traverse it when an allow-list says some of them
/// are welcome.
pub(crate) fn check_socket_dir(dir: &Path, allowed_uids: &[u32], client: bool) -> Result<()> {
    let insecure = |reason: String| Err(IpcError::InsecurePath { path: dir.to_path_buf(), reason });
    if !dir.is_absolute() {
        return insecure("socket_dir must be an absolute path".into());
    }
    let st = match rustix::fs::lstat(dir) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT) => {
            return insecure("does not exist (an explicit socket_dir is never created)".into())
        }
        Err(e) => return insecure(format!("cannot be inspected: {}", io::Error::from(e))),
    };
    match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => {}
        FileType::Symlink => return insecure("is a symlink (refused: use the real directory)".into()),
        _ => return insecure("is not a directory".into()),
    }
    let own = current_uid();
    let owner = st.st_uid;
    if owner != own && !(client && allowed_uids.contains(&owner)) {
        let whom = if client {
            format!("by us (uid {own}) or an allowed uid")
        } else {
            format!("by us (uid {own})")
        };
        return insecure(format!("owned by uid {owner}, not {whom}"));
    }
    let mode = st.st_mode & 0o7777;
    if mode & 0o022 != 0 {
        return insecure(format!("mode {mode:o} is writable by group or others (refused)"));
    }
    if allowed_uids.is_empty() && mode & 0o077 != 0 {
        return insecure(format!(
            "mode {mode:o} gives access to group or others; want 0700 while allowed_uids is empty \
             (a mode such as 0711 lets other users reach the socket only with a non-empty allow-list)"
        ));
    }
    Ok(())
}

/// A connected pair of `AF_UNIX` stream sockets, non-blocking and close-on-exec.
pub(super) fn socket_pair() -> Result<(OwnedFd, OwnedFd)> {
    let (a, b) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        os::SOCKET,
        None,
    )
    .map_err(io::Error::from)?;
    os::after_socket(&a)?;
    os::after_socket(&b)?;
    Ok((a, b))
}

/// What differs between Linux and the other Unixes (macOS): flags Linux has and the others do
/// not, and how to read the peer's credentials.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(super) mod os {
    use std::io;
    use std::os::fd::{BorrowedFd, OwnedFd};

    use rustix::event::PollFlags;
    use rustix::net::{RecvFlags, SendFlags, SocketFlags};

    pub(crate) const SEND: SendFlags = SendFlags::NOSIGNAL;
    pub(crate) const RECV_FDS: RecvFlags = RecvFlags::CMSG_CLOEXEC;
    pub(crate) const SOCKET: SocketFlags = SocketFlags::CLOEXEC.union(SocketFlags::NONBLOCK);
    pub(crate) const HANG_UP: PollFlags = PollFlags::IN.union(PollFlags::RDHUP);

    /// Received descriptors are close-on-exec already (`MSG_CMSG_CLOEXEC`).
    pub(crate) fn after_receive(_fd: &OwnedFd) -> io::Result<()> {
        Ok(())
    }

    /// New sockets are close-on-exec and non-blocking already (`SOCK_*` flags).
    pub(crate) fn after_socket(_fd: &OwnedFd) -> io::Result<()> {
        Ok(())
    }

    pub(crate) fn peer_credentials(sock: BorrowedFd<'_>) -> io::Result<(u32, u32)> {
        let cred = rustix::net::sockopt::socket_peercred(sock)?;
        Ok((cred.uid.as_raw(), cred.pid.as_raw_nonzero().get() as u32))
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(super) mod os {
    use std::io;
    use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

    use rustix::event::PollFlags;
    use rustix::net::{RecvFlags, SendFlags, SocketFlags};

    /// No `MSG_NOSIGNAL`: Rust programs ignore SIGPIPE, so a closed peer is an EPIPE error.
    pub(crate) const SEND: SendFlags = SendFlags::empty();
    pub(crate) const RECV_FDS: RecvFlags = RecvFlags::empty();
    pub(crate) const SOCKET: SocketFlags = SocketFlags::empty();
    /// No `POLLRDHUP`: a hang-up shows as readable (EOF) or `POLLHUP`, which is always reported.
    pub(crate) const HANG_UP: PollFlags = PollFlags::IN;

    fn cloexec(fd: &OwnedFd) -> io::Result<()> {
        rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC)?;
        Ok(())
    }

    pub(crate) fn after_receive(fd: &OwnedFd) -> io::Result<()> {
        cloexec(fd)
    }

    pub(crate) fn after_socket(fd: &OwnedFd) -> io::Result<()> {
        cloexec(fd)?;
        rustix::io::ioctl_fionbio(fd, true)?;
        Ok(())
    }

    /// `getpeereid` for the uid; `LOCAL_PEERPID` for the pid (0 where unknown).
    pub(crate) fn peer_credentials(sock: BorrowedFd<'_>) -> io::Result<(u32, u32)> {
        let (mut uid, mut gid) = (0, 0);
        // SAFETY: `sock` is a valid open descriptor for the duration of the call, and both
        // out-pointers point to live, writable `uid_t`/`gid_t` locals.
        if unsafe { libc::getpeereid(sock.as_raw_fd(), &mut uid, &mut gid) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((uid, peer_pid(sock)))
    }

    /// The boot time in seconds since the epoch (`kern.boottime`), if the kernel answers.
    pub(crate) fn boot_time_secs() -> Option<u64> {
        let mut boot = libc::timeval { tv_sec: 0, tv_usec: 0 };
        let mut len = std::mem::size_of::<libc::timeval>();
        // SAFETY: the name is a NUL-terminated C string; `boot` is a live, writable `timeval`
        // and `len` its size, so the kernel writes at most `len` bytes into it; no new value is
        // set (null pointer, length 0).
        let rc = unsafe {
            libc::sysctlbyname(
                c"kern.boottime".as_ptr(),
                (&mut boot as *mut libc::timeval).cast(),
                &mut len,
                std::ptr::null_mut(),
                0,
            )
        };
        (rc == 0 && len == std::mem::size_of::<libc::timeval>() && boot.tv_sec > 0)
            .then_some(boot.tv_sec as u64)
    }

    #[cfg(target_vendor = "apple")]
    fn peer_pid(sock: BorrowedFd<'_>) -> u32 {
        let mut pid: libc::pid_t = 0;
        let mut len = std::mem::size_of::<libc::pid_t>() as libc::socklen_t;
        // SAFETY: valid descriptor; `pid` and `len` are live locals of the sizes passed.
        let rc = unsafe {
            libc::getsockopt(
                sock.as_raw_fd(),
                libc::SOL_LOCAL,
                libc::LOCAL_PEERPID,
                (&mut pid as *mut libc::pid_t).cast(),
                &mut len,
            )
        };
        if rc == 0 {
            pid as u32
        } else {
            0
        }
    }

    #[cfg(not(target_vendor = "apple"))]
    fn peer_pid(_sock: BorrowedFd<'_>) -> u32 {
        0
    }
}
