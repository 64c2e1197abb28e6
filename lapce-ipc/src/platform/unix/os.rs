//! What differs between Linux and the other Unixes (macOS) in the socket calls: flags Linux has
//! and the others do not, how to read the peer's credentials, and the boot time.

#[cfg(any(target_os = "linux", target_os = "android"))]
mod imp {
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
mod imp {
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

pub(super) use imp::*;
