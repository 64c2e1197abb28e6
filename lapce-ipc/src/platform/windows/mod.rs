//! Windows backend: pagefile-backed sections, auto-reset events and a named-pipe control
//! channel.
//!
//! Nothing of a connection has a name except the listener's pipe: the section and the four
//! events (two per doorbell, one per side) are unnamed and the server duplicates them straight into the client process
//! (`DuplicateHandle`), so no other process can open them by guessing a name. Windows has no
//! cross-process futex (`WaitOnAddress` works within one process only), so every sleeper sleeps
//! on its doorbell event and, at the same time, on the event of a read kept pending on the
//! control pipe, which completes the moment the peer closes the pipe or dies. Async waits hand
//! both events to the system thread pool (`RegisterWaitForSingleObject`), which wakes the task.
//!
//! The trust boundary is the user account: both ends refuse a peer whose process token has
//! another user SID, and any process of the same user may open the other with full access
//! anyway (so a hostile same-user peer is out of scope here, as for `ptrace` on Unix).

mod event;
mod pipe;
mod security;

use std::io;
use std::os::windows::io::{AsHandle, AsRawHandle, BorrowedHandle, FromRawHandle, OwnedHandle};
use std::ptr::null;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use windows_sys::Win32::Foundation::{HANDLE, INVALID_HANDLE_VALUE};
use windows_sys::Win32::System::Memory::{
    CreateFileMappingW, MapViewOfFile, UnmapViewOfFile, FILE_MAP_READ, FILE_MAP_WRITE,
    MEMORY_MAPPED_VIEW_ADDRESS, PAGE_READWRITE,
};
use windows_sys::Win32::System::Threading::{CreateEventW, GetCurrentProcess, GetProcessHandleCount};

use crate::error::{IpcError, Result};

pub(crate) use event::{poll_sleep, sleep_blocking, AsyncHangupWatch, Doorbell, DOORBELL_HANDLES};
pub(crate) use pipe::{
    control_path, control_path_in, AsyncControlListener, AsyncControlStream, ControlListener, ControlStream,
    PeerLink,
};

/// What carries a segment or a doorbell to the peer: a handle (duplicated into the peer).
pub(crate) type OsHandle = OwnedHandle;
/// A borrowed [`OsHandle`].
pub(crate) type BorrowedOsHandle<'a> = BorrowedHandle<'a>;

/// Borrows a handle (the same call on every backend).
pub(crate) fn borrow_handle(handle: &OsHandle) -> BorrowedOsHandle<'_> {
    handle.as_handle()
}

/// Windows has no per-process handle limit to raise (about 16 million handles).
pub(crate) fn raise_handle_limit() -> Option<(u64, u64)> {
    None
}

/// Whether `e` says this process has no handle left (`ERROR_TOO_MANY_OPEN_FILES`,
/// `ERROR_NO_SYSTEM_RESOURCES`).
pub(crate) fn is_out_of_handles(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(4 | 1450))
}

/// No cross-process futex on Windows: blocking sleepers wait on their doorbell event.
pub(crate) const HAS_FUTEX: bool = false;
/// No watcher thread: sleepers wait on the control pipe's pending read themselves.
pub(crate) const HAS_HANGUP_WATCHER: bool = false;

/// Never called on this backend (`HAS_FUTEX` is false); present so that the layers above need no
/// `#[cfg]`.
pub(crate) fn futex_wait(_word: &AtomicU32, _expected: u32, timeout: Option<Duration>) {
    debug_assert!(false, "futex_wait on a backend without futexes");
    std::thread::sleep(timeout.unwrap_or(Duration::from_millis(1)).min(Duration::from_millis(1)));
}

/// No futex sleeper can exist on this backend.
pub(crate) fn futex_wake(_word: &AtomicU32) {}

/// Nothing to clean on Windows: a named pipe disappears with the last handle of it, so a
/// crashed listener leaves nothing behind.
pub(crate) fn clean_stale_control_files() -> Result<Vec<std::path::PathBuf>> {
    Ok(Vec::new())
}

/// This process's id.
pub(crate) fn current_pid() -> u32 {
    std::process::id()
}

/// Windows has no small per-process handle limit (about 16 million): the warm pool needs no
/// budget there.
pub(crate) fn handle_limit() -> Option<usize> {
    None
}

/// Nothing to do: the Windows heap decommits large free ranges by itself (unlike glibc's
/// `malloc`, which the Unix version trims).
pub(crate) fn release_free_heap() {}

/// Open handles of this process (`GetProcessHandleCount`). Wine answers 0, which no live
/// process has: that is reported as unknown.
pub(crate) fn open_handles() -> Option<usize> {
    let mut n = 0u32;
    // SAFETY: the pseudo-handle of the current process is always valid; `n` is a live u32.
    let ok = unsafe { GetProcessHandleCount(GetCurrentProcess(), &mut n) };
    (ok != 0 && n != 0).then_some(n as usize)
}

/// Takes ownership of a handle an API just returned, or the error it reported (APIs report
/// failure with either NULL or `INVALID_HANDLE_VALUE`).
fn owned(h: HANDLE) -> io::Result<OwnedHandle> {
    if h.is_null() || h == INVALID_HANDLE_VALUE {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `h` was just returned by a creating/opening API, is valid, and nothing else owns
    // it: the caller passes each fresh handle here exactly once.
    Ok(unsafe { OwnedHandle::from_raw_handle(h) })
}

/// A new unnamed event: auto-reset (a satisfied wait resets it) or manual-reset.
pub(super) fn new_event(manual_reset: bool) -> io::Result<OwnedHandle> {
    // SAFETY: null security attributes and name are allowed; the result is checked by `owned`.
    owned(unsafe { CreateEventW(null(), i32::from(manual_reset), 0, null()) })
}

/// A shared-memory segment: an unnamed section backed by the paging file, mapped read-write.
/// A section cannot shrink, so the view can never lose its pages under us. The view keeps the
/// section alive by itself, so whoever holds the section's handle (to pass it on) decides how
/// long to keep it.
pub(crate) struct Segment {
    /// Start of the view (`MapViewOfFile` aligns it to 64 KiB); unmapped on drop.
    view: usize,
    len: usize,
}

impl Segment {
    /// Creates a zero-filled segment of `len` bytes: its view and its section handle. `label`
    /// is unused (sections have no name).
    pub(crate) fn create(_label: &str, len: usize) -> Result<(Segment, OwnedHandle)> {
        if len == 0 {
            return Err(IpcError::InvalidArgument("segment length must be > 0".into()));
        }
        let len64 = len as u64;
        // SAFETY: INVALID_HANDLE_VALUE asks for a paging-file-backed section; null attributes and
        // name are allowed; the result is checked by `owned`.
        let section = owned(unsafe {
            CreateFileMappingW(
                INVALID_HANDLE_VALUE,
                null(),
                PAGE_READWRITE,
                (len64 >> 32) as u32,
                len64 as u32,
                null(),
            )
        })?;
        Ok((Self::map(section.as_handle(), len)?, section))
    }

    /// Maps a section received from the peer. Mapping `expected_len` bytes fails if the section
    /// is smaller than the handshake announced.
    pub(crate) fn open(section: BorrowedHandle<'_>, expected_len: usize) -> Result<Segment> {
        Self::map(section, expected_len).map_err(|e| {
            IpcError::Handshake(format!("cannot map the {expected_len}-byte segment the peer sent: {e}"))
        })
    }

    fn map(section: BorrowedHandle<'_>, len: usize) -> io::Result<Segment> {
        // SAFETY: `section` is a live section handle; a failure returns a null address, checked.
        let view =
            unsafe { MapViewOfFile(section.as_raw_handle(), FILE_MAP_READ | FILE_MAP_WRITE, 0, 0, len) };
        if view.Value.is_null() {
            return Err(io::Error::last_os_error());
        }
        Ok(Segment { view: view.Value as usize, len })
    }

    /// Start of the mapping. Valid for [`Segment::len`] bytes while `self` lives.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.view as *mut u8
    }

    /// Length of the mapping in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: `view` is the address `MapViewOfFile` returned for this segment, unmapped only
        // here; the ring layer's pointers into it die with the `Arc<Segment>` that owns them.
        unsafe { UnmapViewOfFile(MEMORY_MAPPED_VIEW_ADDRESS { Value: self.view as *mut _ }) };
    }
}

// SAFETY: `base()` is the start of a live read-write view of exactly `len()` bytes, aligned to
// the 64 KiB allocation granularity, unmapped only when the `Segment` drops; a paging-file
// section never shrinks, so its pages cannot disappear under the view. The crate never forms
// Rust references to the mapped bytes except atomics and the record slices the ring hands out.
unsafe impl crate::ring::SharedRegion for Segment {
    fn base(&self) -> *mut u8 {
        self.as_ptr()
    }
    fn len(&self) -> usize {
        Segment::len(self)
    }
}
