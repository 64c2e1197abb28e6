//! Waiting on events: blocking (`WaitForMultipleObjects`) and async (the system thread pool's
//! `RegisterWaitForSingleObject` raises a [`Signal`] that wakes the polling task).

use std::collections::BTreeMap;
use std::future::poll_fn;
use std::io;
use std::os::windows::io::{AsHandle, AsRawHandle, BorrowedHandle, OwnedHandle};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use windows_sys::Win32::Foundation::{HANDLE, INVALID_HANDLE_VALUE};
use windows_sys::Win32::System::Threading::{
    RegisterWaitForSingleObject, SetEvent, UnregisterWaitEx, WaitForMultipleObjects, INFINITE,
    WT_EXECUTEDEFAULT, WT_EXECUTEONLYONCE,
};

use super::new_event;
use super::pipe::PeerLink;
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

/// Handles one doorbell end is made of (and travels as): the event this side sleeps on, and the
/// peer's event, which it sets.
pub(crate) const DOORBELL_HANDLES: usize = 2;

/// This side's end of a ring's doorbell: two auto-reset events, one per side (an event wakes
/// one side only: a satisfied wait resets it). This side sleeps on `wake_us`, which the peer
/// sets, and sets `wake_peer`, on which the peer sleeps.
pub(crate) struct Doorbell {
    wake_us: OwnedHandle,
    wake_peer: OwnedHandle,
    /// Thread-pool registrations of `wake_us` and of the link's hang-up event, made at the first
    /// async sleep.
    waits: Option<(EventWait, EventWait)>,
}

impl Doorbell {
    /// A new doorbell: its two ends, one for each side.
    pub(crate) fn pair() -> Result<(Doorbell, Doorbell)> {
        let (a, b) = (new_event(false)?, new_event(false)?);
        let (a2, b2) = (a.try_clone()?, b.try_clone()?);
        Ok((Doorbell::new(a, b), Doorbell::new(b2, a2)))
    }

    fn new(wake_us: OwnedHandle, wake_peer: OwnedHandle) -> Doorbell {
        Doorbell { wake_us, wake_peer, waits: None }
    }

    /// Wraps a doorbell end received from the peer. (A handle of another kind makes rings and
    /// waits fail or wake spuriously, both harmless: waits always re-check the ring.)
    pub(crate) fn from_handles([wake_us, wake_peer]: [OwnedHandle; DOORBELL_HANDLES]) -> Result<Doorbell> {
        Ok(Doorbell::new(wake_us, wake_peer))
    }

    /// The handles to duplicate into the peer.
    pub(crate) fn handles(&self) -> [BorrowedHandle<'_>; DOORBELL_HANDLES] {
        [self.wake_us.as_handle(), self.wake_peer.as_handle()]
    }

    /// Rings the peer: sets its event. Setting a set event is a no-op, so ringing never blocks
    /// or piles up.
    pub(crate) fn ring(&self) {
        // SAFETY: `wake_peer` is a live handle owned by `self`.
        unsafe { SetEvent(self.wake_peer.as_raw_handle()) };
    }
}

/// Sleeps until `bell` is rung or the peer hangs up, for at most `timeout`; `Ok` says nothing,
/// the caller re-checks. (The auto-reset event is reset by the satisfied wait.)
///
/// Once an async sleep has registered the doorbell with the thread pool, the pool's wait takes
/// every ring of the auto-reset event (a blocking wait beside it would lose the race and sleep
/// on), so the thread sleeps on the registrations' signals instead.
pub(crate) fn sleep_blocking(bell: &Doorbell, link: &PeerLink, timeout: Option<Duration>) -> Result<()> {
    if let Some((ours, gone)) = &bell.waits {
        park_on_signals(ours, gone, link, timeout);
        return Ok(());
    }
    let handles: [HANDLE; 2] = [bell.wake_us.as_raw_handle(), link.event()];
    // SAFETY: both handles are live for the call (owned by `bell` and `link`, borrowed here).
    unsafe { WaitForMultipleObjects(2, handles.as_ptr(), 0, wait_ms(timeout)) };
    Ok(())
}

/// Parks this thread until `ours` or `gone` is raised, for at most `timeout`. `gone` notifies
/// once, which an earlier sleep may have taken: the link's event, which stays signalled, is
/// looked at first. A stale unpark later only makes some sleep re-check early.
fn park_on_signals(ours: &EventWait, gone: &EventWait, link: &PeerLink, timeout: Option<Duration>) {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    if link.hung_up() || ours.poll_signalled(&mut cx).is_ready() || gone.poll_signalled(&mut cx).is_ready() {
        return;
    }
    match timeout {
        Some(t) => std::thread::park_timeout(t),
        None => std::thread::park(),
    }
}

/// Ready when the peer rang `bell` or the link's event fired (the peer hung up); else registers
/// `cx`'s waker with both (at the first sleep: with the system thread pool) and is pending.
pub(crate) fn poll_sleep(bell: &mut Doorbell, link: &PeerLink, cx: &mut Context<'_>) -> Poll<Result<()>> {
    if bell.waits.is_none() {
        let ours = EventWait::register(bell.wake_us.as_handle(), false)?;
        // The link's event stays signalled once the peer is gone: one notification is enough,
        // and every later wait checks the link before sleeping.
        let gone = EventWait::register(link.event_handle(), true)?;
        bell.waits = Some((ours, gone));
    }
    let (ours, gone) = bell.waits.as_ref().expect("registered just above");
    if ours.poll_signalled(cx).is_ready() || gone.poll_signalled(cx).is_ready() {
        return Poll::Ready(Ok(()));
    }
    Poll::Pending
}

/// Where a pool worker tells a task that an event was signalled: a flag, and the waker of the
/// task that polls it (if one waits).
#[derive(Default)]
pub(super) struct Signal {
    raised: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Signal {
    /// Raises the flag and wakes the waiting task, if any.
    fn raise(&self) {
        self.raised.store(true, Ordering::Release);
        let waker = self.waker.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Ready (and lowered) once raised; else keeps `cx`'s waker. The flag is looked at again
    /// after the waker is stored, so a raise in between is not lost.
    fn poll(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.raised.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        *self.waker.lock().unwrap_or_else(|p| p.into_inner()) = Some(cx.waker().clone());
        if self.raised.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// An event registered with the system thread pool: each time it is signalled, a pool worker
/// raises `signal` (waking a waiting task, or left raised for the next poll).
pub(super) struct EventWait {
    signal: Arc<Signal>,
    /// The registration's key in [`SIGNALS`] (its callback's context).
    key: usize,
    /// The registration (a wait handle, not a kernel object handle), unregistered on drop.
    wait: usize,
    /// Our own handle of the event, so the object outlives the registration.
    _event: OwnedHandle,
}

/// The signals of the live registrations, by key. A callback's context is its key, not a
/// pointer: a callback that runs after its registration was dropped finds nothing here and does
/// nothing. (Wine 8 runs a queued callback even after `UnregisterWaitEx(..,
/// INVALID_HANDLE_VALUE)` has returned; an address as the context would be read after free.)
static SIGNALS: Mutex<BTreeMap<usize, Arc<Signal>>> = Mutex::new(BTreeMap::new());

/// The next registration's key (never reused).
static NEXT_KEY: AtomicUsize = AtomicUsize::new(1);

fn signals() -> std::sync::MutexGuard<'static, BTreeMap<usize, Arc<Signal>>> {
    SIGNALS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs on a thread pool worker each time the event is signalled.
extern "system" fn on_signal(context: *mut core::ffi::c_void, _timed_out: bool) {
    let signal = signals().get(&(context as usize)).cloned();
    if let Some(signal) = signal {
        signal.raise();
    }
}

impl EventWait {
    /// Registers `event`. `once`: a single notification (for events that stay signalled);
    /// otherwise one per signal (auto-reset events, reset by the pool's satisfied wait).
    pub(super) fn register(event: BorrowedHandle<'_>, once: bool) -> io::Result<EventWait> {
        let event = event.try_clone_to_owned()?;
        let signal = Arc::new(Signal::default());
        let key = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
        signals().insert(key, signal.clone());
        // Not WT_EXECUTEINWAITTHREAD, which would save the hop to a pool worker: Wine (8.0)
        // raises such a wait's pending-callback count outside the pool's lock, and an
        // unregistration in that window crashes the process (see the test below).
        let flags = if once { WT_EXECUTEONLYONCE } else { WT_EXECUTEDEFAULT };
        let mut wait: HANDLE = std::ptr::null_mut();
        // SAFETY: `event` is a live handle we own; `on_signal` matches WAITORTIMERCALLBACK and
        // takes its context as a number, never dereferenced.
        let ok = unsafe {
            RegisterWaitForSingleObject(
                &mut wait,
                event.as_raw_handle(),
                Some(on_signal),
                key as *mut core::ffi::c_void,
                INFINITE,
                flags,
            )
        };
        if ok == 0 {
            let err = io::Error::last_os_error();
            signals().remove(&key);
            return Err(err);
        }
        Ok(EventWait { signal, key, wait: wait as usize, _event: event })
    }

    /// Ready once the event was signalled since the last time this was ready.
    pub(super) fn poll_signalled(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.signal.poll(cx)
    }

    /// Resolves at the next signal (at once if one came since the last).
    pub(super) async fn signalled(&self) {
        poll_fn(|cx| self.poll_signalled(cx)).await;
    }
}

impl Drop for EventWait {
    fn drop(&mut self) {
        // SAFETY: `wait` is our live registration. INVALID_HANDLE_VALUE makes the call wait for
        // running callbacks to finish (a late one finds no signal, see `SIGNALS`).
        unsafe { UnregisterWaitEx(self.wait as HANDLE, INVALID_HANDLE_VALUE) };
        signals().remove(&self.key);
    }
}

/// Waits in tokio for the peer's hang-up alone (this backend has no hang-up watcher, so nothing
/// else notices it while no wait is under way).
pub(crate) struct AsyncHangupWatch {
    link: EventWait,
}

impl AsyncHangupWatch {
    pub(crate) fn new(link: &PeerLink) -> Result<AsyncHangupWatch> {
        Ok(AsyncHangupWatch { link: EventWait::register(link.event_handle(), true)? })
    }

    /// Resolves once the peer has hung up (the link's event stays signalled from then on).
    pub(crate) async fn hung_up(&self) -> Result<()> {
        self.link.signalled().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A waker that counts its wake-ups.
    #[derive(Default)]
    struct Woken(std::sync::atomic::AtomicU64);

    impl std::task::Wake for Woken {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A ring reaches the task waiting on the registration, once per ring.
    #[test]
    fn each_ring_wakes_the_waiting_task() {
        let (sleeper, ringer) = Doorbell::pair().unwrap();
        let wait = EventWait::register(sleeper.wake_us.as_handle(), false).unwrap();
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
    /// `tp_object_cancel` that killed a server child in CI (`server_memory`). It also runs a
    /// queued callback after `UnregisterWaitEx` returned: see `SIGNALS`.
    #[test]
    fn a_registration_dropped_while_its_event_fires_is_safe() {
        let (sleeper, ringer) = Doorbell::pair().unwrap();
        // A task's waker is kept in each registration, as a sleeping wait keeps one: a callback
        // that ran after its registration was dropped would call it from freed memory.
        let woken = Arc::new(Woken::default());
        let waker = Waker::from(woken.clone());
        for i in 0..20_000u32 {
            let wait = EventWait::register(sleeper.wake_us.as_handle(), i % 2 == 0).unwrap();
            let _ = wait.poll_signalled(&mut Context::from_waker(&waker));
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
