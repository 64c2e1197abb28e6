//! Overlapped operations on a pipe: an `OVERLAPPED` with its event, and an operation in flight
//! that is cancelled, and its cancellation waited for, if it is abandoned.

use std::io;
use std::os::windows::io::{AsHandle, AsRawHandle, BorrowedHandle, OwnedHandle};
use std::ptr::null_mut;
use std::time::Duration;

use windows_sys::Win32::Foundation::{GetLastError, ERROR_IO_PENDING, ERROR_PIPE_CONNECTED, WAIT_OBJECT_0};
use windows_sys::Win32::Storage::FileSystem::{ReadFile, WriteFile};
use windows_sys::Win32::System::Pipes::ConnectNamedPipe;
use windows_sys::Win32::System::Threading::{ResetEvent, WaitForSingleObject};
use windows_sys::Win32::System::IO::{CancelIoEx, GetOverlappedResult, OVERLAPPED};

use super::super::event::{wait_ms, EventWait};
use super::super::new_event;

/// An `OVERLAPPED` and its manual-reset event, boxed so their address never changes while the
/// kernel may write to them.
pub(super) struct Overlapped {
    pub(super) ov: OVERLAPPED,
    pub(super) event: OwnedHandle,
}

// SAFETY: `OVERLAPPED` is plain data; its only pointer, `hEvent`, is the value of the handle
// `event` owns, valid from any thread. The kernel writes to `ov` only during an operation, which
// needs `&mut Overlapped` (held by a `Pending` or by the `PeerLink` that started it), so shared
// references only ever read the event handle.
unsafe impl Send for Overlapped {}
// SAFETY: see `Send`; `&Overlapped` gives access to nothing but the event handle.
unsafe impl Sync for Overlapped {}

impl Overlapped {
    pub(super) fn new() -> io::Result<Box<Overlapped>> {
        let event = new_event(true)?;
        let ov = OVERLAPPED { hEvent: event.as_raw_handle(), ..Default::default() };
        Ok(Box::new(Overlapped { ov, event }))
    }

    /// Ready for a new operation: cleared fields, event reset.
    pub(super) fn reset(&mut self) {
        self.ov = OVERLAPPED { hEvent: self.event.as_raw_handle(), ..Default::default() };
        // SAFETY: `event` is a live handle we own.
        unsafe { ResetEvent(self.event.as_raw_handle()) };
    }
}

/// One operation to start on a pipe.
pub(super) enum Op<'a> {
    Read(&'a mut [u8]),
    Write(&'a [u8]),
    Connect,
}

/// An overlapped operation in flight. Dropped unfinished, it cancels the operation and waits
/// for the kernel to let go of the buffer and the `OVERLAPPED` it borrows. Private, and never
/// leaked with `mem::forget`, which this soundness argument relies on.
pub(super) struct Pending<'a> {
    pipe: BorrowedHandle<'a>,
    io: &'a mut Overlapped,
    /// Set when the operation finished synchronously with this result.
    finished: Option<io::Result<usize>>,
    done: bool,
}

impl<'a> Pending<'a> {
    pub(super) fn start(
        pipe: BorrowedHandle<'a>,
        io: &'a mut Overlapped,
        op: Op<'a>,
    ) -> io::Result<Pending<'a>> {
        io.reset();
        let raw = pipe.as_raw_handle();
        // SAFETY: `pipe` is live for 'a; the buffer and `io.ov` are borrowed for 'a, and the
        // returned `Pending` (which holds those borrows) waits for completion or cancellation
        // before it lets them go.
        let ok = unsafe {
            match op {
                Op::Read(buf) => {
                    let len = buf.len().min(u32::MAX as usize) as u32;
                    ReadFile(raw, buf.as_mut_ptr(), len, null_mut(), &mut io.ov)
                }
                Op::Write(bytes) => {
                    let len = bytes.len().min(u32::MAX as usize) as u32;
                    WriteFile(raw, bytes.as_ptr(), len, null_mut(), &mut io.ov)
                }
                Op::Connect => ConnectNamedPipe(raw, &mut io.ov),
            }
        };
        let mut pending = Pending { pipe, io, finished: None, done: false };
        if ok == 0 {
            // SAFETY: plain call.
            match unsafe { GetLastError() } {
                ERROR_IO_PENDING => {}
                // A client connected between CreateNamedPipe and ConnectNamedPipe.
                ERROR_PIPE_CONNECTED => {
                    pending.done = true;
                    pending.finished = Some(Ok(0));
                }
                code => {
                    // Nothing is in flight after an immediate failure.
                    pending.done = true;
                    return Err(io::Error::from_raw_os_error(code as i32));
                }
            }
        }
        Ok(pending)
    }

    /// The result of the finished operation (its event is signalled).
    fn result(&mut self) -> io::Result<usize> {
        if let Some(r) = self.finished.take() {
            return r;
        }
        let mut n = 0u32;
        // SAFETY: `pipe` and `io.ov` are the ones the operation was started with; with `bWait`
        // false this only collects a completed operation's result.
        let ok = unsafe { GetOverlappedResult(self.pipe.as_raw_handle(), &self.io.ov, &mut n, 0) };
        self.done = true;
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    fn is_signalled(&self) -> bool {
        // SAFETY: the event is a live handle owned by `io`.
        self.finished.is_some()
            || unsafe { WaitForSingleObject(self.io.event.as_raw_handle(), 0) } == WAIT_OBJECT_0
    }

    /// Waits (blocking) at most `timeout`; `TimedOut` after that (and the operation is cancelled).
    pub(super) fn wait(mut self, timeout: Option<Duration>) -> io::Result<usize> {
        if self.finished.is_none() {
            // SAFETY: the event is a live handle owned by `io`.
            let r = unsafe { WaitForSingleObject(self.io.event.as_raw_handle(), wait_ms(timeout)) };
            if r != WAIT_OBJECT_0 {
                return Err(io::ErrorKind::TimedOut.into());
            }
        }
        self.result()
    }

    /// Waits asynchronously (the thread pool watches the event).
    pub(super) async fn wait_async(mut self) -> io::Result<usize> {
        if !self.is_signalled() {
            let waiter = EventWait::register(self.io.event.as_handle(), true)?;
            while !self.is_signalled() {
                waiter.signalled().await;
            }
        }
        self.result()
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.done {
            let mut n = 0u32;
            // SAFETY: the operation may still be in flight on `pipe` with `io.ov`: cancel it and
            // wait (bWait = TRUE) until the kernel has finished with the buffer and `io.ov`.
            unsafe {
                CancelIoEx(self.pipe.as_raw_handle(), &self.io.ov);
                GetOverlappedResult(self.pipe.as_raw_handle(), &self.io.ov, &mut n, 1);
            }
        }
    }
}
