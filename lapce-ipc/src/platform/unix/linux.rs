//! Linux backend: memfd segments (sealed, never visible in `/dev/shm`), futex sleeping, and an
//! epoll thread that reports peers hanging up.

use std::collections::HashMap;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustix::event::epoll;
use rustix::fs::{fcntl_add_seals, fcntl_get_seals, ftruncate, memfd_create, MemfdFlags, SealFlags};
use rustix::thread::futex;

use crate::error::{IpcError, Result};

/// Blocking sleepers use the futex on this backend.
pub(crate) const HAS_FUTEX: bool = true;
/// A watcher thread hears every control socket hang up and wakes the futex sleepers.
pub(crate) const HAS_HANGUP_WATCHER: bool = true;

/// Seals every segment carries: its size can never change, so a mapping can never lose its
/// backing pages (a shrink would turn our reads into SIGBUS).
const REQUIRED_SEALS: SealFlags = SealFlags::SHRINK.union(SealFlags::GROW).union(SealFlags::SEAL);

/// A new segment descriptor: an anonymous memfd of `len` bytes, sealed against resizing (its
/// memory is freed by the kernel when the last process holding it lets go, so a crash leaves
/// nothing behind). `label` only shows up in `/proc/<pid>/fd` (as `memfd:label`).
pub(crate) fn new_segment_fd(label: &str, len: usize) -> Result<OwnedFd> {
    let fd = memfd_create(label, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).map_err(io::Error::from)?;
    ftruncate(&fd, len as u64).map_err(io::Error::from)?;
    fcntl_add_seals(&fd, REQUIRED_SEALS).map_err(io::Error::from)?;
    Ok(fd)
}

/// memfd segments have no name: nothing can be left behind.
pub(crate) fn clean_stale_segments() -> Vec<std::path::PathBuf> {
    Vec::new()
}

/// Checks a segment descriptor received from a peer: a memfd sealed against resizing.
pub(crate) fn check_segment_fd(fd: std::os::fd::BorrowedFd<'_>) -> Result<()> {
    let seals = fcntl_get_seals(fd)
        .map_err(|e| IpcError::Handshake(format!("segment fd is not a sealable memfd: {e}")))?;
    if !seals.contains(SealFlags::SHRINK | SealFlags::GROW) {
        return Err(IpcError::Handshake(format!("segment is not sealed against resizing (seals {seals:?})")));
    }
    Ok(())
}

/// Sleeps while `word == expected`, for at most `timeout` (`None`: until woken). Not private:
/// the word lives in memory shared with another process, so the kernel must key the futex on the
/// physical page. Returning says nothing (woken, value already changed, timeout, signal): the
/// caller re-checks its condition and its deadline.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let ts =
        timeout.map(|t| rustix::fs::Timespec { tv_sec: t.as_secs() as _, tv_nsec: t.subsec_nanos() as _ });
    let _ = futex::wait(word, futex::Flags::empty(), expected, ts.as_ref());
}

/// Wakes every process sleeping on `word`.
pub(crate) fn futex_wake(word: &AtomicU32) {
    let _ = futex::wake(word, futex::Flags::empty(), i32::MAX as u32);
}

/// A registration with the process's hang-up watcher: until it is cancelled, `on_hangup` runs
/// (once, on the watcher thread) as soon as the watched socket's peer closes it or dies.
pub(crate) struct HangupWatch {
    token: u64,
    watcher: Arc<Watcher>,
}

/// One epoll set and one thread per process, watching every connection's control socket.
/// Idle connections cost nothing: the thread sleeps in `epoll_wait` until a peer hangs up.
struct Watcher {
    epoll: OwnedFd,
    callbacks: Mutex<HashMap<u64, Box<dyn FnOnce() + Send>>>,
    next_token: AtomicU64,
}

impl Watcher {
    fn shared() -> Result<Arc<Watcher>> {
        static WATCHER: Mutex<Option<Arc<Watcher>>> = Mutex::new(None);
        let mut slot = WATCHER.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = slot.as_ref() {
            return Ok(w.clone());
        }
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC).map_err(io::Error::from)?;
        let w = Arc::new(Watcher { epoll, callbacks: Mutex::default(), next_token: AtomicU64::new(1) });
        let run = w.clone();
        std::thread::Builder::new().name("lapce-ipc-hangup".into()).spawn(move || run.run())?;
        *slot = Some(w.clone());
        Ok(w)
    }

    fn run(&self) {
        let mut events = Vec::with_capacity(64);
        loop {
            events.clear();
            match epoll::wait(&self.epoll, rustix::buffer::spare_capacity(&mut events), None) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(_) => return,
            }
            for event in events.drain(..) {
                let callback = self.lock().remove(&event.data.u64());
                if let Some(callback) = callback {
                    callback();
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Box<dyn FnOnce() + Send>>> {
        self.callbacks.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Runs `on_hangup` once when the peer of `sock` hangs up (or sends anything: after the
/// handshake the control socket carries nothing, so any readiness means the peer is gone or
/// broken). The socket itself is registered, not a duplicate (a connection costs no descriptor
/// more), so its owner must [cancel](HangupWatch::cancel) the watch before closing it.
pub(crate) fn watch_hangup(sock: BorrowedFd<'_>, on_hangup: Box<dyn FnOnce() + Send>) -> Result<HangupWatch> {
    let watcher = Watcher::shared()?;
    let token = watcher.next_token.fetch_add(1, Ordering::Relaxed);
    watcher.lock().insert(token, on_hangup);
    let flags = epoll::EventFlags::IN | epoll::EventFlags::RDHUP | epoll::EventFlags::ONESHOT;
    if let Err(e) = epoll::add(&watcher.epoll, sock, epoll::EventData::new_u64(token), flags) {
        watcher.lock().remove(&token);
        return Err(io::Error::from(e).into());
    }
    Ok(HangupWatch { token, watcher })
}

impl HangupWatch {
    /// Ends the watch of `sock` (the socket it was made for, still open): its callback will not
    /// run.
    pub(crate) fn cancel(&self, sock: BorrowedFd<'_>) {
        self.watcher.lock().remove(&self.token);
        let _ = epoll::delete(&self.watcher.epoll, sock);
    }
}
