//! Passing file descriptors: one message with descriptors attached (`SCM_RIGHTS`).

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};

use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, SendAncillaryBuffer, SendAncillaryMessage,
};

use super::os;

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
