//! Unix-domain control sockets: message + file-descriptor passing (SCM_RIGHTS), peer
//! credentials, hang-up detection and the private runtime directory. Shared by every Unix backend.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use rustix::event::{poll, PollFd, PollFlags};
use rustix::fs::{FileType, Mode};
use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
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
    let n = sendmsg(sock, &[IoSlice::new(bytes)], &mut control, SendFlags::NOSIGNAL)?;
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
    let msg = recvmsg(sock, &mut [IoSliceMut::new(buf)], &mut control, RecvFlags::CMSG_CLOEXEC)?;
    let mut fds = Vec::new();
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = m {
            fds.extend(received);
        }
    }
    if msg.flags.contains(rustix::net::ReturnFlags::CTRUNC) {
        return Err(io::Error::other("control message truncated (too many fds)"));
    }
    Ok((msg.bytes, fds))
}

/// The user id of the process at the other end of a connected Unix socket.
pub(crate) fn peer_uid(sock: impl AsFd) -> io::Result<u32> {
    let cred = rustix::net::sockopt::socket_peercred(sock)?;
    Ok(cred.uid.as_raw())
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
    let mut fds = [PollFd::new(&sock, PollFlags::IN | PollFlags::RDHUP)];
    let zero = rustix::event::Timespec { tv_sec: 0, tv_nsec: 0 };
    match poll(&mut fds, Some(&zero)) {
        Ok(0) => false,
        Ok(_) => !fds[0].revents().is_empty(),
        Err(_) => true,
    }
}

/// The private per-user runtime directory: `$XDG_RUNTIME_DIR/lapce-ipc/`, else
/// `/tmp/lapce-ipc-<uid>/`. Created with mode 0700 if missing; refused when it is a symlink, not
/// a directory, owned by someone else or accessible by group/others.
pub(crate) fn runtime_dir() -> Result<PathBuf> {
    let uid = current_uid();
    let dir = match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(base) if !base.is_empty() => PathBuf::from(base).join("lapce-ipc"),
        _ => PathBuf::from(format!("/tmp/lapce-ipc-{uid}")),
    };
    match rustix::fs::mkdir(&dir, Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => {
            return Err(IpcError::Bind { path: dir, source: e.into() });
        }
    }
    let st = rustix::fs::lstat(&dir).map_err(|e| IpcError::Bind { path: dir.clone(), source: e.into() })?;
    let insecure = |reason: String| Err(IpcError::InsecurePath { path: dir.clone(), reason });
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
    Ok(dir)
}

/// Registers an owned descriptor with the current tokio reactor for readability.
pub(crate) fn register_readable(fd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: `OwnedFd` owns an open descriptor that stays open, and keeps returning the same
    // raw fd, until it is dropped; the `AsyncFd` takes ownership of it and never swaps it, so
    // the descriptor outlives the registration as `register_with_interest` requires.
    let registered =
        unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) };
    registered.map_err(|e| e.into_parts().1)
}
