//! [`Dispatcher`]: the thread that completes a [`BlockingIpcClient`]'s
//! [`request_async`](crate::BlockingIpcClient::request_async) calls and runs their callbacks.
//!
//! Rules:
//! - One thread per client, started at the first `request_async`: a client that never makes
//!   one has none.
//! - Its calls are owners like any other (see [`super::calls`]): it reads the connection only
//!   when one of them is handed the reader role, and gives the role back before it runs a
//!   callback, so a callback may make requests of its own (blocking ones included).
//! - Every callback runs exactly once, on this thread, one at a time; a panicking callback is
//!   logged and the thread goes on.
//! - Dropping the client cancels the calls in flight (a `Cancel` to the server, then the callback
//!   with [`IpcError::Cancelled`] unless the answer came first) and the thread ends once they are
//!   settled.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::task::{Poll, Wake, Waker};
use std::thread::Thread;
use std::time::Instant;

use bytes::Bytes;
use slab::Slab;

use super::blocking::{Conn, CANCEL_WAIT};
use super::calls::{Ticket, Turn};
use super::inbound::Inbound;
use crate::error::{IpcError, Result};
use crate::frame::MessageType;

/// A request's callback.
pub(super) type Callback = Box<dyn FnOnce(Result<Bytes>) + Send>;

/// A client's dispatch thread, as the client holds it.
pub(super) struct Dispatcher {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    thread: OnceLock<Thread>,
}

#[derive(Default)]
struct State {
    /// Calls sent and not settled yet.
    calls: Slab<Pending>,
    /// Calls whose state may have changed (their waker fired): polled next.
    ready: Vec<usize>,
    /// Outcomes known before the call went out (e.g. no connection): callbacks to run.
    failed: Vec<(Callback, IpcError)>,
    /// The client is gone: cancel what is left, then end.
    stopping: bool,
}

struct Pending {
    conn: Arc<Conn>,
    ticket: Ticket,
    deadline: Option<Instant>,
    callback: Callback,
    waker: Waker,
}

/// Marks one call ready and wakes the thread.
struct CallWaker {
    key: usize,
    shared: Weak<Shared>,
}

impl Wake for CallWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(shared) = self.shared.upgrade() {
            shared.state().ready.push(self.key);
            shared.unpark();
        }
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn unpark(&self) {
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }
}

impl Dispatcher {
    /// Starts the thread.
    pub(super) fn start() -> Result<Dispatcher> {
        let shared = Arc::new(Shared { state: Mutex::default(), thread: OnceLock::new() });
        let run = shared.clone();
        let handle = std::thread::Builder::new()
            .name("lapce-ipc-dispatch".into())
            .spawn(move || run_thread(&run))
            .map_err(IpcError::Io)?;
        let _ = shared.thread.set(handle.thread().clone());
        Ok(Dispatcher { shared })
    }

    /// Hands over a call sent on `conn` (its reader role given back): `callback` gets its
    /// outcome, or [`IpcError::Timeout`] at `deadline`.
    pub(super) fn add(&self, conn: Arc<Conn>, ticket: Ticket, deadline: Option<Instant>, callback: Callback) {
        let mut st = self.shared.state();
        let entry = st.calls.vacant_entry();
        let key = entry.key();
        let waker = Waker::from(Arc::new(CallWaker { key, shared: Arc::downgrade(&self.shared) }));
        entry.insert(Pending { conn, ticket, deadline, callback, waker });
        // Polled once by the thread: it registers the waker (or takes the role).
        st.ready.push(key);
        drop(st);
        self.shared.unpark();
    }

    /// Runs `callback` with `error` on the thread.
    pub(super) fn fail(&self, callback: Callback, error: IpcError) {
        self.shared.state().failed.push((callback, error));
        self.shared.unpark();
    }
}

impl Drop for Dispatcher {
    /// Cancels the calls in flight on the server; the thread settles them and ends.
    fn drop(&mut self) {
        let in_flight: Vec<(Arc<Conn>, u64)> = {
            let mut st = self.shared.state();
            st.stopping = true;
            st.calls.iter().map(|(_, p)| (p.conn.clone(), p.ticket.id)).collect()
        };
        for (conn, id) in in_flight {
            let _ =
                conn.outbox.send_blocking(MessageType::Cancel, id, &[], Some(Instant::now() + CANCEL_WAIT));
        }
        self.shared.unpark();
    }
}

/// The thread: polls the calls that changed, reads for them when handed the role, runs the
/// callbacks, expires calls at their deadline; sleeps meanwhile.
fn run_thread(shared: &Arc<Shared>) {
    loop {
        let (ready, failed, stopping) = {
            let mut st = shared.state();
            (std::mem::take(&mut st.ready), std::mem::take(&mut st.failed), st.stopping)
        };
        for (callback, error) in failed {
            run_callback(callback, Err(error));
        }
        for key in ready {
            poll_call(shared, key);
        }
        let next_deadline = expire(shared, Instant::now());
        let mut st = shared.state();
        if !st.ready.is_empty() || !st.failed.is_empty() {
            continue;
        }
        if stopping {
            let left: Vec<Pending> = st.calls.drain().collect();
            drop(st);
            for p in left {
                // The cancel went out when the client was dropped.
                p.conn.calls.end(p.ticket);
                run_callback(p.callback, Err(IpcError::Cancelled));
            }
            return;
        }
        drop(st);
        match next_deadline {
            Some(d) => std::thread::park_timeout(d.saturating_duration_since(Instant::now())),
            None => std::thread::park(),
        }
    }
}

/// Polls call `key` (if it is still there): runs its callback when settled, reads for it when
/// it is handed the role.
fn poll_call(shared: &Arc<Shared>, key: usize) {
    let Some((conn, ticket, waker)) =
        shared.state().calls.get(key).map(|p| (p.conn.clone(), p.ticket, p.waker.clone()))
    else {
        return;
    };
    match conn.calls.poll_unary(ticket, &waker) {
        Poll::Ready(Turn::Done(outcome)) => {
            let pending = shared.state().calls.remove(key);
            run_callback(pending.callback, outcome);
        }
        Poll::Ready(Turn::Read(inbound)) => {
            // The reader's own call is not woken by what it reads: its waker goes in now.
            if conn.calls.poll_settled(ticket, &waker).is_ready() {
                shared.state().ready.push(key);
            }
            read(shared, &conn, inbound);
            // It gave the role back unanswered (other calls were settled): polled again, it
            // waits for the role like any owner, or takes it.
            shared.state().ready.push(key);
        }
        Poll::Pending => {}
    }
}

/// As the reader of `conn`: hands every message to its call until one of this thread's calls
/// is settled (its waker marks it ready) or the earliest deadline, then gives the role back.
fn read(shared: &Arc<Shared>, conn: &Conn, mut inbound: Box<Inbound>) {
    let deadline = shared.state().calls.iter().filter_map(|(_, p)| p.deadline).min();
    loop {
        loop {
            match inbound.try_next(|msg, block| conn.calls.deliver(msg, block)) {
                Ok(Some(())) => {}
                Ok(None) => break,
                Err(e) => {
                    conn.calls.fail_all(&e);
                    conn.calls.give_back(inbound);
                    return;
                }
            }
        }
        let st = shared.state();
        if !st.ready.is_empty() || st.stopping {
            drop(st);
            conn.calls.give_back(inbound);
            return;
        }
        drop(st);
        match inbound.rx().readable_blocking(deadline) {
            Ok(()) => {}
            Err(IpcError::Timeout) => {
                conn.calls.give_back(inbound);
                return;
            }
            Err(e) => {
                conn.calls.fail_all(&e);
                conn.calls.give_back(inbound);
                return;
            }
        }
    }
}

/// Fails the calls whose deadline passed with [`IpcError::Timeout`] (cancelling them on the
/// server); the earliest deadline left.
fn expire(shared: &Arc<Shared>, now: Instant) -> Option<Instant> {
    let expired: Vec<Pending> = {
        let mut st = shared.state();
        let keys: Vec<usize> =
            st.calls.iter().filter(|(_, p)| p.deadline.is_some_and(|d| d <= now)).map(|(k, _)| k).collect();
        keys.into_iter().map(|k| st.calls.remove(k)).collect()
    };
    for p in expired {
        if p.conn.calls.end(p.ticket) {
            let deadline = Some(Instant::now() + CANCEL_WAIT);
            let _ = p.conn.outbox.send_blocking(MessageType::Cancel, p.ticket.id, &[], deadline);
        }
        run_callback(p.callback, Err(IpcError::Timeout));
    }
    shared.state().calls.iter().filter_map(|(_, p)| p.deadline).min()
}

/// Runs a callback; a panic is logged, not propagated (the thread serves the other calls).
fn run_callback(callback: Callback, outcome: Result<Bytes>) {
    if catch_unwind(AssertUnwindSafe(|| callback(outcome))).is_err() {
        tracing::error!("a request_async callback panicked");
    }
}
