//! Waiting on events: blocking (`WaitForMultipleObjects`) and async (the system thread pool's
//! `RegisterWaitForSingleObject` wakes a tokio [`Notify`]).

use std::io;
use std::os::windows::io::{AsRawHandle, BorrowedHandle, OwnedHandle};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use windows_sys::Win32::Foundation::{HANDLE, INVALID_HANDLE_VALUE};
use windows_sys::Win32::System::Threading::{
    RegisterWaitForSingleObject, UnregisterWaitEx, WaitForMultipleObjects, INFINITE, WT_EXECUTEINWAITTHREAD,
    WT_EXECUTEONLYONCE,
};

use super::pipe::PeerLink;
use super::Doorbell;
use crate::error::Result;

/// Milliseconds for a Win32 wait: rounded up (a wait never ends early), `INFINITE` for none.
pub(super) fn wait_ms(timeout: Option<Duration>) -> u32 {
    match timeout {
        None => INFINITE,
        Some(t) => {
            let ms = t.as_nanos().div_ceil(1_000_000);
            u32::try_from(ms).unwrap_or(INFINITE - 1).min(INFINITE - 1)
        }
    }
}

/// Sleeps until `bell` is rung or the peer hangs up, for at most `timeout`; returning says
/// nothing, the caller re-checks. (The auto-reset doorbell is reset by the satisfied wait.)
pub(crate) fn sleep_blocking(bell: &Doorbell, link: &PeerLink, timeout: Option<Duration>) {
    let handles: [HANDLE; 2] = [bell.raw(), link.event()];
    // SAFETY: both handles are live for the call (owned by `bell` and `link`, borrowed here).
    unsafe { WaitForMultipleObjects(2, handles.as_ptr(), 0, wait_ms(timeout)) };
}

/// An event registered with the system thread pool: each time it is signalled, the pool's wait
/// thread notifies `notify` (a waiting task, or a stored permit for the next one).
pub(super) struct EventWait {
    notify: Arc<Notify>,
    /// The registration (a wait handle, not a kernel object handle), unregistered on drop.
    wait: usize,
    /// Our own handle of the event, so the object outlives the registration.
    _event: OwnedHandle,
}

/// Runs on the thread pool's wait thread each time the event is signalled.
unsafe extern "system" fn on_signal(context: *mut core::ffi::c_void, _timed_out: bool) {
    // SAFETY: `context` is the `Arc<Notify>` pointer `EventWait::register` leaked for this
    // registration; it is released only after `UnregisterWaitEx` has waited for every callback.
    let notify = unsafe { &*(context as *const Notify) };
    notify.notify_one();
}

impl EventWait {
    /// Registers `event`. `once`: a single notification (for events that stay signalled);
    /// otherwise one per signal (auto-reset events, reset by the pool's satisfied wait).
    pub(super) fn register(event: BorrowedHandle<'_>, once: bool) -> io::Result<EventWait> {
        let event = event.try_clone_to_owned()?;
        let notify = Arc::new(Notify::new());
        let context = Arc::into_raw(notify.clone());
        let flags = WT_EXECUTEINWAITTHREAD | if once { WT_EXECUTEONLYONCE } else { 0 };
        let mut wait: HANDLE = std::ptr::null_mut();
        // SAFETY: `event` is a live handle we own; `on_signal` matches WAITORTIMERCALLBACK and
        // only reads `context`, which stays valid until the registration is gone (see Drop).
        let ok = unsafe {
            RegisterWaitForSingleObject(
                &mut wait,
                event.as_raw_handle(),
                Some(on_signal),
                context.cast(),
                INFINITE,
                flags,
            )
        };
        if ok == 0 {
            let err = io::Error::last_os_error();
            // SAFETY: the registration failed, so no callback holds `context`: release it.
            unsafe { Arc::decrement_strong_count(context) };
            return Err(err);
        }
        Ok(EventWait { notify, wait: wait as usize, _event: event })
    }

    /// Resolves at the next notification (at once if one is stored).
    pub(super) async fn signalled(&self) {
        self.notify.notified().await;
    }
}

impl Drop for EventWait {
    fn drop(&mut self) {
        // SAFETY: `wait` is our live registration. INVALID_HANDLE_VALUE makes the call wait for
        // running callbacks to finish, after which none can start: the leaked context reference
        // can then be released.
        unsafe {
            UnregisterWaitEx(self.wait as HANDLE, INVALID_HANDLE_VALUE);
            Arc::decrement_strong_count(Arc::as_ptr(&self.notify));
        }
    }
}

/// A doorbell and a peer link registered with the thread pool, for async sleeps.
pub(crate) struct AsyncSleeper {
    bell: EventWait,
    link: EventWait,
}

impl AsyncSleeper {
    pub(crate) fn new(bell: &Doorbell, link: &PeerLink) -> Result<AsyncSleeper> {
        Ok(AsyncSleeper {
            bell: EventWait::register(bell.handle(), false)?,
            // The link's event stays signalled once the peer is gone: one notification is
            // enough, and every later wait checks the link before sleeping.
            link: EventWait::register(link.event_handle(), true)?,
        })
    }

    /// Resolves when the doorbell was rung or the link's event fired (the peer hung up).
    pub(crate) async fn sleep(&self) -> Result<()> {
        tokio::select! {
            _ = self.bell.signalled() => {}
            _ = self.link.signalled() => {}
        }
        Ok(())
    }
}
