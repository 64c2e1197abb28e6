//! Waiting on events: blocking (`WaitForMultipleObjects`) and async (the system thread pool's
//! `RegisterWaitForSingleObject` wakes a tokio [`Notify`]).

use std::io;
use std::os::windows::io::{AsRawHandle, BorrowedHandle, OwnedHandle};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use windows_sys::Win32::Foundation::{HANDLE, INVALID_HANDLE_VALUE};
use windows_sys::Win32::System::Threading::{
    RegisterWaitForSingleObject, UnregisterWaitEx, WaitForMultipleObjects, INFINITE, WT_EXECUTEDEFAULT,
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

/// An event registered with the system thread pool: each time it is signalled, a pool worker
/// notifies `notify` (a waiting task, or a stored permit for the next one).
pub(super) struct EventWait {
    notify: Arc<Notify>,
    /// The registration (a wait handle, not a kernel object handle), unregistered on drop.
    wait: usize,
    /// Our own handle of the event, so the object outlives the registration.
    _event: OwnedHandle,
}

/// Runs on a thread pool worker each time the event is signalled.
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
        // Not WT_EXECUTEINWAITTHREAD, which would save the hop to a pool worker: Wine (8.0)
        // raises such a wait's pending-callback count outside the pool's lock, and an
        // unregistration in that window crashes the process (see the test below).
        let flags = if once { WT_EXECUTEONLYONCE } else { WT_EXECUTEDEFAULT };
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A ring reaches the task waiting on the registration, once per ring.
    #[test]
    fn each_ring_wakes_the_waiting_task() {
        let (sleeper, ringer) = Doorbell::pair().unwrap();
        let wait = EventWait::register(sleeper.handle(), false).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        for round in 0..100 {
            ringer.ring();
            let woken = runtime
                .block_on(async { tokio::time::timeout(Duration::from_secs(10), wait.signalled()).await });
            assert!(woken.is_ok(), "ring {round} did not wake the task within 10 s");
        }
    }

    /// A registration dropped while its event fires: the pool's wait thread may be dispatching
    /// the callback as we unregister. Wine (8.0) raised a wait's pending-callback count outside
    /// the pool's lock for `WT_EXECUTEINWAITTHREAD` waits, so an unregistration in that window
    /// unlinked a list entry that was never linked: a write to address 0x8 in ntdll's
    /// `tp_object_cancel` that killed a server child in CI (`server_memory`, 2026-12-05).
    #[test]
    fn a_registration_dropped_while_its_event_fires_is_safe() {
        let (sleeper, ringer) = Doorbell::pair().unwrap();
        for i in 0..20_000u32 {
            let wait = EventWait::register(sleeper.handle(), i % 2 == 0).unwrap();
            ringer.ring();
            // Unregister between 0 and ~100 us after the ring, so that some unregistrations
            // meet the wait thread dispatching it (with the flag, Wine crashed within 20,000
            // rounds in each of three runs).
            let ring = std::time::Instant::now();
            while ring.elapsed() < Duration::from_nanos(u64::from(i % 100) * 1_000) {
                std::hint::spin_loop();
            }
            drop(wait);
        }
    }
}
