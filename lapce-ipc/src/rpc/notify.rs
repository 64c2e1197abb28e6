//! Server-to-client notifications on the client side: [`Notification`], the per-client
//! [`Hub`] that whoever reads the connection hands them to, and [`NotificationReceiver`].
//!
//! Rules:
//! - A client that registered nothing pays nothing: a notification frame is dropped as it is
//!   read (no copy, no count), like any frame that answers no call.
//! - Once registered, notifications wait in a bounded queue ([`NOTIFICATION_QUEUE_LEN`] notifications,
//!   [`NOTIFICATION_QUEUE_BYTES`] bytes; one always fits an empty queue): when it is full the newest is
//!   dropped and counted, so a client that never takes them holds a bounded amount.
//! - Someone must read the connection while no request waits: a listener (see
//!   [`super::listen`]) does, started with the registration.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;

use bytes::Bytes;
use tokio::sync::Notify;

use crate::frame::{FrameError, MessageType};

/// Most notifications a client keeps before it drops new ones.
pub const NOTIFICATION_QUEUE_LEN: usize = 1024;
/// Most payload bytes a client keeps before it drops new notifications (one fits an empty
/// queue whatever its size).
pub const NOTIFICATION_QUEUE_BYTES: usize = 16 << 20;

/// A notification the server pushed (see [`Peer::notify`](crate::Peer::notify)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Its message type (an application type).
    pub kind: MessageType,
    /// Its payload.
    pub payload: Bytes,
}

/// Whether `kind` may be a notification's type: an application type, not one the protocol uses
/// itself.
pub(crate) fn is_notification_type(kind: MessageType) -> bool {
    !matches!(
        kind,
        MessageType::Heartbeat
            | MessageType::Control
            | MessageType::Response
            | MessageType::Error
            | MessageType::StreamChunk
            | MessageType::StreamEnd
            | MessageType::StreamWindow
            | MessageType::Cancel
    )
}

/// A notification callback (blocking client).
pub(super) type Callback = Box<dyn FnMut(Notification) + Send>;

/// One client's notifications, across its connections.
#[derive(Default)]
pub(super) struct Hub {
    /// Something registered: notifications are kept.
    subscribed: AtomicBool,
    state: Mutex<HubState>,
    /// Told when a notification is queued (async receivers).
    queued: Notify,
    dropped: AtomicU64,
    /// The client is gone: receivers end once the queue is empty.
    closed: AtomicBool,
}

#[derive(Default)]
struct HubState {
    queue: VecDeque<Notification>,
    bytes: usize,
    /// The blocking client's callback, taken out while it runs.
    callback: Option<Callback>,
    has_callback: bool,
    /// The listener that runs the callback, woken when one is queued.
    runner: Option<Waker>,
}

impl Hub {
    fn state(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn is_subscribed(&self) -> bool {
        self.subscribed.load(Ordering::Acquire)
    }

    /// Keeps notifications from now on (for a receiver).
    pub(super) fn subscribe(&self) {
        self.subscribed.store(true, Ordering::Release);
    }

    /// Keeps notifications from now on, for `callback` (replacing an earlier one).
    pub(super) fn set_callback(&self, callback: Callback) {
        let mut st = self.state();
        st.callback = Some(callback);
        st.has_callback = true;
        drop(st);
        self.subscribe();
    }

    /// A notification frame was read: queued if somebody listens and there is room (`copy`
    /// makes its payload, only then), else dropped.
    pub(super) fn offer(
        &self,
        kind: MessageType,
        len: usize,
        copy: impl FnOnce() -> Result<Bytes, FrameError>,
    ) -> Result<(), FrameError> {
        if !self.is_subscribed() {
            return Ok(());
        }
        let mut st = self.state();
        if !st.queue.is_empty()
            && (st.queue.len() >= NOTIFICATION_QUEUE_LEN || st.bytes + len > NOTIFICATION_QUEUE_BYTES)
        {
            drop(st);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let payload = copy()?;
        st.bytes += payload.len();
        st.queue.push_back(Notification { kind, payload });
        let runner = st.runner.take();
        drop(st);
        self.queued.notify_one();
        if let Some(w) = runner {
            w.wake();
        }
        Ok(())
    }

    fn pop(&self) -> Option<Notification> {
        let mut st = self.state();
        let n = st.queue.pop_front()?;
        st.bytes -= n.payload.len();
        Some(n)
    }

    /// Notifications dropped so far because the queue was full.
    pub(super) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Whether queued notifications wait for the callback; else `waker` is kept and woken when
    /// one is queued.
    pub(super) fn callback_due(&self, waker: &Waker) -> bool {
        let mut st = self.state();
        if st.has_callback && !st.queue.is_empty() {
            return true;
        }
        if st.has_callback {
            st.runner = Some(waker.clone());
        }
        false
    }

    /// Hands the queued notifications to the callback (if there is one, and it is not running
    /// elsewhere).
    pub(super) fn run_callback(&self) {
        let Some(mut callback) = self.state().callback.take() else { return };
        while let Some(n) = self.pop() {
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| callback(n))).is_err() {
                tracing::error!("a notification callback panicked");
            }
        }
        let mut st = self.state();
        if st.callback.is_none() {
            st.callback = Some(callback);
        }
    }

    /// The client is gone.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.queued.notify_waiters();
        self.queued.notify_one();
    }
}

/// The notifications of an [`IpcClient`](crate::IpcClient) (see
/// [`IpcClient::notifications`](crate::IpcClient::notifications)): an async receiver over the
/// client's bounded queue.
pub struct NotificationReceiver {
    hub: Arc<Hub>,
}

impl std::fmt::Debug for NotificationReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotificationReceiver").field("dropped", &self.hub.dropped()).finish_non_exhaustive()
    }
}

impl NotificationReceiver {
    pub(super) fn new(hub: Arc<Hub>) -> NotificationReceiver {
        NotificationReceiver { hub }
    }

    /// The next notification, waiting for one; `None` once the client is dropped and the
    /// queue is empty.
    pub async fn recv(&mut self) -> Option<Notification> {
        loop {
            let queued = self.hub.queued.notified();
            if let Some(n) = self.hub.pop() {
                return Some(n);
            }
            if self.hub.closed.load(Ordering::Acquire) {
                return None;
            }
            queued.await;
        }
    }

    /// The next notification if one is queued.
    pub fn try_recv(&mut self) -> Option<Notification> {
        self.hub.pop()
    }

    /// Notifications dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.hub.dropped()
    }
}
