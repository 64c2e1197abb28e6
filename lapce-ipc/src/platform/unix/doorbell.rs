//! Doorbells of the Unix backends: one per ring of a connection, a connected `AF_UNIX` stream
//! socket pair whose two ends the two sides hold (one descriptor each).
//!
//! A side sleeps on its own end (readable once the peer rang: sent a byte) and rings the peer by
//! sending a byte on the same end. A ring's two waiters are on opposite sides (the consumer waits
//! for data, the producer for room), so each end hears only the rings meant for its side's one
//! waiter. When the peer's end closes (it dropped the connection, or died) ours reads
//! end-of-file, so a sleeper hears the peer go without watching the control socket too.
//!
//! Why not an eventfd: descriptors passed with `SCM_RIGHTS` share their open file description,
//! so a peer could clear `O_NONBLOCK` on a shared eventfd and make our reads or writes block,
//! and an eventfd cannot tell that the peer went away. Each end of a socket pair is its own
//! description, and every operation here passes `MSG_DONTWAIT`, so no peer can make a ring or a
//! drain block.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
#[cfg(feature = "tokio")]
use std::task::{Context, Poll};
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags};
use rustix::net::{RecvFlags, SendFlags};
#[cfg(feature = "tokio")]
use tokio::io::unix::AsyncFd;
#[cfg(feature = "tokio")]
use tokio::io::Interest;

use super::os;
use super::socket::socket_pair;
use crate::error::{IpcError, Result};

/// Handles one doorbell end is made of (and travels as): its socket.
pub(crate) const DOORBELL_HANDLES: usize = 1;

/// This side's end of a ring's doorbell. Registered with the tokio reactor at the first async
/// sleep (the descriptor itself, not a duplicate: one descriptor per end whatever the flavour).
pub(crate) struct Doorbell {
    end: End,
}

enum End {
    Plain(OwnedFd),
    #[cfg(feature = "tokio")]
    Registered(AsyncFd<OwnedFd>),
    /// Only inside [`Doorbell::registered`], while the descriptor moves into its registration.
    #[cfg(feature = "tokio")]
    Moving,
}

impl Doorbell {
    /// A new doorbell: its two ends, one for each side.
    pub(crate) fn pair() -> Result<(Doorbell, Doorbell)> {
        let (a, b) = socket_pair()?;
        Ok((Doorbell::plain(a), Doorbell::plain(b)))
    }

    fn plain(fd: OwnedFd) -> Doorbell {
        Doorbell { end: End::Plain(fd) }
    }

    /// Wraps a doorbell end received from the peer after checking it is a stream socket.
    pub(crate) fn from_handles([fd]: [OwnedFd; DOORBELL_HANDLES]) -> Result<Doorbell> {
        match rustix::net::sockopt::socket_type(&fd) {
            Ok(rustix::net::SocketType::STREAM) => Ok(Doorbell::plain(fd)),
            _ => Err(IpcError::Handshake("a doorbell descriptor is not a stream socket".into())),
        }
    }

    /// The descriptors to pass to the peer.
    pub(crate) fn handles(&self) -> [BorrowedFd<'_>; DOORBELL_HANDLES] {
        [self.fd()]
    }

    fn fd(&self) -> BorrowedFd<'_> {
        match &self.end {
            End::Plain(fd) => fd.as_fd(),
            #[cfg(feature = "tokio")]
            End::Registered(reg) => reg.get_ref().as_fd(),
            #[cfg(feature = "tokio")]
            End::Moving => unreachable!("a doorbell is never left moving"),
        }
    }

    /// Rings the peer: sends one byte. A full queue means it is already ringing; a closed peer
    /// end means the peer is going away (its sleeps end with end-of-file): both are fine to
    /// ignore.
    pub(crate) fn ring(&self) {
        let _ = rustix::net::send(self.fd(), &[1], SendFlags::DONTWAIT | os::SEND);
    }

    /// Sleeps until the peer rings or goes (its end or `link`, the control socket, hangs up),
    /// for at most `timeout`; then empties the doorbell. The blocking sleep of backends without
    /// a futex. [`IpcError::PeerGone`]: the peer's end is closed.
    pub(crate) fn sleep_blocking(&self, link: impl AsFd, timeout: Option<Duration>) -> Result<()> {
        let ts = timeout
            .map(|t| rustix::event::Timespec { tv_sec: t.as_secs() as _, tv_nsec: t.subsec_nanos() as _ });
        let bell = self.fd();
        let mut fds = [PollFd::new(&bell, PollFlags::IN), PollFd::new(&link, os::HANG_UP)];
        let _ = poll(&mut fds, ts.as_ref());
        drain(self.fd()).map(|_| ()).map_err(|_| IpcError::PeerGone)
    }

    #[cfg(feature = "tokio")]
    /// Ready when the peer rang (and the doorbell is emptied); else registers `cx`'s waker and
    /// is pending. [`IpcError::PeerGone`]: the peer closed or broke its end. Poll-based, so
    /// that a wait holds no future of its own.
    pub(crate) fn poll_sleep(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let reg = match self.registered() {
            Ok(reg) => reg,
            Err(e) => return Poll::Ready(Err(e)),
        };
        while let Poll::Ready(ready) = reg.poll_read_ready(cx) {
            let mut guard = ready?;
            match drain(guard.get_inner().as_fd()) {
                // The drain read until the queue was empty, so the readiness it answered is
                // spent: clearing it saves the next sleep a `recv` that would find nothing. (A
                // ring after that `recv` is a newer readiness event, which this does not clear:
                // tokio clears only the event this guard saw.)
                Ok(true) => {
                    guard.clear_ready();
                    return Poll::Ready(Ok(()));
                }
                // Nothing queued: readiness cleared, poll again (which registers the waker).
                Ok(false) => guard.clear_ready(),
                // The peer closed or broke its end of the doorbell: it is going away.
                Err(_) => return Poll::Ready(Err(IpcError::PeerGone)),
            }
        }
        Poll::Pending
    }

    #[cfg(feature = "tokio")]
    /// The registration with the current tokio reactor, made at the first call.
    fn registered(&mut self) -> Result<&AsyncFd<OwnedFd>> {
        if matches!(self.end, End::Plain(_)) {
            let End::Plain(fd) = std::mem::replace(&mut self.end, End::Moving) else {
                unreachable!("matched just above")
            };
            // SAFETY: the `AsyncFd` takes ownership of the descriptor, which stays open (and keeps
            // its number) until the `AsyncFd` is dropped, and nothing else registers it with this
            // reactor, as `register_with_interest` requires.
            let registered = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) };
            self.end = match registered {
                Ok(reg) => End::Registered(reg),
                Err(e) => {
                    let (fd, err) = e.into_parts();
                    self.end = End::Plain(fd);
                    return Err(err.into());
                }
            };
        }
        match &self.end {
            End::Registered(reg) => Ok(reg),
            _ => unreachable!("registered just above"),
        }
    }
}

/// Empties a doorbell end. `Ok(true)`: it had been rung; `Ok(false)`: nothing was queued. An
/// error means the other end is closed or unusable.
fn drain(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut rung = false;
    let mut buf = [0u8; 64];
    loop {
        match rustix::net::recv(fd, &mut buf[..], RecvFlags::DONTWAIT) {
            Ok((_, 0)) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "doorbell closed")),
            Ok(_) => rung = true,
            Err(rustix::io::Errno::AGAIN) => return Ok(rung),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each end hears the other's rings only; ringing never blocks, however often the sleeper
    /// neglects to drain; draining empties it; a closed peer end reads as an error.
    #[test]
    fn rings_cross_never_block_and_a_closed_end_is_heard() {
        let (a, b) = Doorbell::pair().unwrap();
        assert!(!drain(a.fd()).unwrap());
        for _ in 0..100_000 {
            b.ring();
        }
        assert!(!drain(b.fd()).unwrap(), "a ring reaches the other end only");
        assert!(drain(a.fd()).unwrap());
        assert!(!drain(a.fd()).unwrap());
        a.ring();
        assert!(drain(b.fd()).unwrap());
        drop(b);
        assert!(drain(a.fd()).is_err());
        assert!(matches!(a.sleep_blocking(a.fd(), Some(Duration::from_secs(5))), Err(IpcError::PeerGone)));
    }

    /// An async sleep wakes at a ring, and ends with `PeerGone` once the peer's end is closed.
    #[test]
    fn async_sleeps_hear_rings_and_the_peer_going() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (mut a, b) = Doorbell::pair().unwrap();
            let ringer = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                b.ring();
                std::thread::sleep(Duration::from_millis(20));
                drop(b);
            });
            let woke = std::future::poll_fn(|cx| a.poll_sleep(cx)).await;
            assert!(woke.is_ok());
            let gone = std::future::poll_fn(|cx| a.poll_sleep(cx)).await;
            assert!(matches!(gone, Err(IpcError::PeerGone)), "{gone:?}");
            ringer.join().unwrap();
        });
    }

    #[test]
    fn doorbell_refuses_other_descriptors() {
        let (a, _b) = rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::DGRAM,
            os::SOCKET,
            None,
        )
        .unwrap();
        assert!(Doorbell::from_handles([a]).is_err());
        let file = std::fs::File::open("/dev/null").unwrap();
        assert!(Doorbell::from_handles([file.into()]).is_err());
    }
}
