//! [`BlockingResponseStream`]: a streamed answer read by a thread as an iterator, and the
//! [`StreamCanceller`] that stops it from any thread.
//!
//! Rules:
//! - The owner takes the reader role only while `next` waits, and gives it back after every
//!   chunk: a consumer that takes its time with a chunk holds up nobody.
//! - Credit for the stream window goes back before a chunk is handed on, so an iterator that is
//!   not advanced holds the server back by the window (chunks other readers took in wait in the
//!   stream's slot, bounded by the window as with [`ResponseStream`](crate::ResponseStream)).
//! - A cancel sets a flag, wakes the owner if it is parked, and sends `Cancel`: the server stops
//!   the handler and answers with an error (or the stream's end, if it ended first), which wakes
//!   an owner that sleeps on the ring.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Poll, Waker};
use std::time::Instant;

use bytes::Bytes;

use super::blocking::{park_until, read_until_own, Conn, CANCEL_WAIT};
use super::calls::{own_chunk, Ticket, Turn};
use super::inbound::Inbound;
use super::window::{self, Consumed};
use crate::error::{IpcError, Result};
use crate::frame::MessageType;

/// The chunks of a streamed answer as an iterator (see
/// [`BlockingIpcClient::request_stream`](crate::BlockingIpcClient::request_stream)).
///
/// `next` blocks the calling thread until the next chunk, the stream's end (`None`) or an
/// error (the handler's error, a lost connection, [`IpcError::Cancelled`] after a cancel),
/// which ends the stream: `next` returns `None` after it. Dropping the stream before its end
/// cancels the request on the server.
pub struct BlockingResponseStream {
    conn: Arc<Conn>,
    ticket: Ticket,
    kind: MessageType,
    /// The reader role, only while `next` reads.
    role: Option<Box<Inbound>>,
    finished: bool,
    /// What the owner consumed and did not credit back yet, when the client has a stream window.
    consumed: Option<Consumed>,
    cancel: Arc<CancelState>,
}

/// Stops a [`BlockingResponseStream`] from any thread: `Send + Sync + Clone`, and holds the
/// connection only weakly.
///
/// ```no_run
/// use lapce_ipc::frame::MessageType;
/// use lapce_ipc::{BlockingIpcClient, IpcConfig, IpcError};
///
/// let client = BlockingIpcClient::connect("lapce-ai", IpcConfig::default())?;
/// let mut tokens = client.request_stream(MessageType::Chat, "prompt")?;
/// let stop = tokens.canceller();
/// std::thread::spawn(move || {
///     std::thread::sleep(std::time::Duration::from_secs(1));
///     stop.cancel(); // The reader's `next` returns Err(Cancelled), then None.
/// });
/// for token in &mut tokens {
///     match token {
///         Ok(bytes) => println!("{} bytes", bytes.len()),
///         Err(IpcError::Cancelled) => break,
///         Err(e) => return Err(e),
///     }
/// }
/// # Ok::<(), lapce_ipc::IpcError>(())
/// ```
#[derive(Clone)]
pub struct StreamCanceller {
    conn: Weak<Conn>,
    id: u64,
    state: Arc<CancelState>,
}

impl std::fmt::Debug for BlockingResponseStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingResponseStream")
            .field("request_id", &self.ticket.id)
            .field("kind", &self.kind)
            .field("finished", &self.finished)
            .field("cancelled", &self.cancel.cancelled.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for StreamCanceller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamCanceller")
            .field("request_id", &self.id)
            .field("cancelled", &self.state.cancelled.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// What a stream and its cancellers share.
#[derive(Default)]
struct CancelState {
    cancelled: AtomicBool,
    /// The owner's thread while it is parked (taken by a cancel, which wakes it).
    parked: Mutex<Option<Waker>>,
}

impl CancelState {
    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// Keeps `waker` for a cancel; whether the stream is cancelled already. Under the lock a
    /// cancel takes too, so it cannot fall between the look and the wait.
    fn park_with(&self, waker: &Waker) -> bool {
        let mut parked = self.parked.lock().unwrap_or_else(|p| p.into_inner());
        if self.is_cancelled() {
            return true;
        }
        match &*parked {
            Some(w) if w.will_wake(waker) => {}
            _ => *parked = Some(waker.clone()),
        }
        false
    }
}

impl StreamCanceller {
    /// Cancels the stream: the server stops the handler, and a thread blocked in the stream's
    /// `next` wakes and gets [`IpcError::Cancelled`] (at once when it is parked; when it sleeps
    /// on the ring itself, as soon as the server answers the cancel), then `None`. A stream
    /// whose end had arrived already just ends (`None`). Idempotent; harmless once the stream
    /// is over.
    pub fn cancel(&self) {
        let waker = {
            let mut parked = self.state.parked.lock().unwrap_or_else(|p| p.into_inner());
            if self.state.cancelled.swap(true, Ordering::AcqRel) {
                return;
            }
            parked.take()
        };
        if let Some(conn) = self.conn.upgrade() {
            let deadline = Instant::now() + CANCEL_WAIT;
            let _ = conn.outbox.send_blocking(MessageType::Cancel, self.id, &[], Some(deadline));
        }
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Whether [`cancel`](Self::cancel) was called (by any clone).
    pub fn is_cancelled(&self) -> bool {
        self.state.is_cancelled()
    }
}

impl BlockingResponseStream {
    /// Sends a streaming request on `conn` and returns its stream.
    pub(super) fn start(
        conn: Arc<Conn>,
        kind: MessageType,
        payload: &[u8],
        window: Option<u32>,
    ) -> Result<BlockingResponseStream> {
        let (ticket, role) = conn.calls.begin(kind, true, false)?;
        let mut stream = BlockingResponseStream {
            conn,
            ticket,
            kind,
            role,
            finished: false,
            consumed: window.map(Consumed::new),
            cancel: Arc::default(),
        };
        // The role is not kept while the request waits for room, nor between chunks.
        stream.give_back_role();
        if let Err(e) = stream.conn.outbox.send_blocking(kind, ticket.id, payload, None) {
            stream.finished = true;
            return Err(e);
        }
        Ok(stream)
    }

    /// A handle that cancels this stream from any thread.
    pub fn canceller(&self) -> StreamCanceller {
        StreamCanceller { conn: Arc::downgrade(&self.conn), id: self.ticket.id, state: self.cancel.clone() }
    }

    /// The request's id on its connection.
    pub fn request_id(&self) -> u64 {
        self.ticket.id
    }

    fn give_back_role(&mut self) {
        if let Some(inbound) = self.role.take() {
            self.conn.calls.give_back(inbound);
        }
    }

    /// The next item as the reader or from the slot; a cancel while parked ends the wait.
    fn next_item(&mut self) -> Option<Result<Bytes>> {
        loop {
            if self.role.is_some() {
                let kind = self.kind;
                let own = read_until_own(&self.conn, self.ticket, &mut self.role, None, |msg, block| {
                    own_chunk(msg, block, kind)
                });
                return own.unwrap_or_else(|e| Some(Err(e)));
            }
            let (calls, ticket, cancel) = (&self.conn.calls, self.ticket, &self.cancel);
            let turn = park_until(None, |waker| {
                if cancel.park_with(waker) {
                    return Poll::Ready(None);
                }
                calls.poll_stream(ticket, waker).map(Some)
            });
            match turn {
                Ok(Some(Turn::Done(item))) => return item,
                Ok(Some(Turn::Read(inbound))) => self.role = Some(inbound),
                Ok(None) => return Some(Err(IpcError::Cancelled)),
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// The owner takes a chunk of `len` bytes: a batch of credit goes back to the server when
    /// complete (before the chunk is handed on: the owner may take its time with it). Credit
    /// that cannot be sent means a lost connection, which the next read meets.
    fn credit(&mut self, len: usize) {
        let Some(consumed) = self.consumed.as_mut().filter(|_| self.conn.calls.windowed()) else { return };
        if let Some(bytes) = consumed.consumed(len) {
            let (outbox, id, payload) = (&self.conn.outbox, self.ticket.id, window::encode(bytes));
            if outbox.try_send(MessageType::StreamWindow, id, &payload)
                || outbox.send_blocking(MessageType::StreamWindow, id, &payload, None).is_ok()
            {
                consumed.credited(bytes);
            }
        }
    }
}

impl Iterator for BlockingResponseStream {
    type Item = Result<Bytes>;

    /// The next chunk; `None` after the stream's end or after an error (returned once).
    fn next(&mut self) -> Option<Result<Bytes>> {
        if self.finished {
            return None;
        }
        let item = if self.cancel.is_cancelled() { Some(Err(IpcError::Cancelled)) } else { self.next_item() };
        self.give_back_role();
        // A chunk that raced the cancel is not handed on: the caller asked to stop.
        let item = match item {
            Some(Ok(_)) if self.cancel.is_cancelled() => Some(Err(IpcError::Cancelled)),
            other => other,
        };
        match &item {
            Some(Ok(chunk)) => self.credit(chunk.len()),
            _ => self.finished = true,
        }
        item
    }
}

impl Drop for BlockingResponseStream {
    fn drop(&mut self) {
        let running = match self.role.take() {
            Some(inbound) => self.conn.calls.end_giving_back(self.ticket, inbound),
            None => self.conn.calls.end(self.ticket),
        };
        if running && !self.finished && !self.cancel.is_cancelled() {
            let deadline = Instant::now() + CANCEL_WAIT;
            let _ = self.conn.outbox.send_blocking(MessageType::Cancel, self.ticket.id, &[], Some(deadline));
        }
    }
}
