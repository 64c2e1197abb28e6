//! Unix-domain socket mechanics shared by every Unix backend: socket pairs, and probes of a
//! connected peer (hung up?) and of a socket path (anyone listening?).

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use rustix::event::{poll, PollFd};

use super::credentials::peer_credentials;
use super::os;
use crate::error::Result;

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
