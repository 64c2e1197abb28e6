//! Who is at the other end of a Unix socket (as the kernel recorded it), and who we are.

use std::io;
use std::os::fd::AsFd;

use super::os;

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
