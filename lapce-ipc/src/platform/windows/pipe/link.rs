//! [`PeerLink`]: the control pipe after the handshake, whose pending one-byte read reports the
//! peer's hang-up.

use std::io;
use std::os::windows::io::{AsHandle, AsRawHandle, BorrowedHandle, OwnedHandle};
use std::ptr::null_mut;

use windows_sys::Win32::Foundation::{GetLastError, ERROR_IO_PENDING, HANDLE, WAIT_OBJECT_0};
use windows_sys::Win32::Storage::FileSystem::ReadFile;
use windows_sys::Win32::System::Threading::{SetEvent, WaitForSingleObject};
use windows_sys::Win32::System::IO::{CancelIoEx, GetOverlappedResult, OVERLAPPED};

use super::overlapped::Overlapped;
use super::ControlStream;
use crate::error::Result;

/// The control pipe of an established connection: it only tells whether the peer lives.
///
/// A one-byte read is kept pending on the pipe; it completes (signalling `io.event`) when the
/// peer closes its end or dies, or sends anything, which no live peer does after the handshake.
/// Dropping the link cancels the read and closes the pipe, which the peer hears at once.
pub(crate) struct PeerLink {
    pipe: OwnedHandle,
    io: Box<Overlapped>,
    /// The pending read's buffer: boxed, so its address is stable while the read is in flight.
    buf: Box<[u8; 1]>,
    /// A read may still be in flight (cancel and wait for it on drop).
    in_flight: bool,
}

impl PeerLink {
    /// Starts the pending read. `on_hangup` is dropped: this backend has no watcher thread
    /// (sleepers wait on [`event`](Self::event) themselves).
    pub(crate) fn new(stream: ControlStream, _on_hangup: Box<dyn FnOnce() + Send>) -> Result<PeerLink> {
        let ControlStream { pipe, mut io, .. } = stream;
        io.reset();
        let mut buf = Box::new([0u8; 1]);
        let request = StartRead {
            pipe: pipe.as_raw_handle() as usize,
            buf: buf.as_mut_ptr() as usize,
            ov: &mut io.ov as *mut OVERLAPPED as usize,
        };
        let in_flight = start_read_on_link_thread(request)?;
        if !in_flight {
            // It finished at once: data (a protocol violation) or an error (the peer is gone).
            // SAFETY: `io.event` is a live handle we own.
            unsafe { SetEvent(io.event.as_raw_handle()) };
        }
        Ok(PeerLink { pipe, io, buf, in_flight })
    }

    /// True once the peer has hung up (or sent anything). Never blocks.
    pub(crate) fn hung_up(&self) -> bool {
        // SAFETY: `io.event` is a live handle we own.
        unsafe { WaitForSingleObject(self.io.event.as_raw_handle(), 0) == WAIT_OBJECT_0 }
    }

    /// The event that is signalled once the peer is gone (stays signalled).
    pub(in crate::platform::windows) fn event(&self) -> HANDLE {
        self.io.event.as_raw_handle()
    }

    pub(in crate::platform::windows) fn event_handle(&self) -> BorrowedHandle<'_> {
        self.io.event.as_handle()
    }
}

/// A one-byte read to start on a link's pipe (raw values: they cross to the link thread).
struct StartRead {
    pipe: usize,
    buf: usize,
    ov: usize,
}

/// Starts `read` on the process's link thread and returns whether it is in flight.
///
/// Windows cancels a thread's pending I/O when the thread exits, and Wine does so even for
/// handles associated with a completion port. A link's read must last as long as the
/// connection, whichever thread set it up (a spawned accept thread, a tokio worker), so it is
/// issued by one thread that lives as long as the process and does nothing else.
fn start_read_on_link_thread(read: StartRead) -> io::Result<bool> {
    type Job = (StartRead, std::sync::mpsc::SyncSender<bool>);
    static LINK_THREAD: std::sync::OnceLock<std::sync::Mutex<std::sync::mpsc::Sender<Job>>> =
        std::sync::OnceLock::new();
    let jobs = match LINK_THREAD.get() {
        Some(jobs) => jobs,
        None => {
            let (tx, rx) = std::sync::mpsc::channel::<Job>();
            std::thread::Builder::new().name("lapce-ipc-links".into()).spawn(move || {
                for (read, done) in rx {
                    // SAFETY: the `PeerLink` being built owns the pipe, the boxed buffer and
                    // the boxed OVERLAPPED these values point to, waits for our answer before
                    // it goes on, and cancels the read and waits for it before freeing them.
                    let ok = unsafe {
                        ReadFile(
                            read.pipe as HANDLE,
                            read.buf as *mut u8,
                            1,
                            null_mut(),
                            read.ov as *mut OVERLAPPED,
                        )
                    };
                    // SAFETY: plain call.
                    let in_flight = ok == 0 && unsafe { GetLastError() } == ERROR_IO_PENDING;
                    let _ = done.send(in_flight);
                }
            })?;
            LINK_THREAD.get_or_init(|| std::sync::Mutex::new(tx))
        }
    };
    let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
    let sent = jobs.lock().unwrap_or_else(|p| p.into_inner()).send((read, done_tx));
    if sent.is_err() {
        return Err(io::Error::other("lapce-ipc link thread is gone"));
    }
    done_rx.recv().map_err(|_| io::Error::other("lapce-ipc link thread is gone"))
}

impl Drop for PeerLink {
    fn drop(&mut self) {
        if self.in_flight {
            let mut n = 0u32;
            // SAFETY: the read started in `new` may be in flight on `pipe` with `io.ov` and
            // `buf`: cancel it and wait (bWait = TRUE) until the kernel is done with them.
            unsafe {
                CancelIoEx(self.pipe.as_raw_handle(), &self.io.ov);
                GetOverlappedResult(self.pipe.as_raw_handle(), &self.io.ov, &mut n, 1);
            }
        }
        let _ = &self.buf;
    }
}
