//! [`Outbox`]: the outgoing side of a request/response connection, written by whichever task or
//! thread has something to send: no writer task, no queue.
//!
//! Rules:
//! - A message that fits one ring record is written whole or not at all: it waits for room
//!   before anything is written, and the write itself has no await point. Most messages are
//!   written by [`Outbox::try_send`] with no wait at all.
//! - The records of a fragmented message are written back to back by one sender holding the
//!   sending half, so no other message comes between them. If the sending future is dropped midway (a timeout, a
//!   cancelled handler), the rest of the message is kept (copied, in that rare case) and written
//!   first by the next sender, so the peer never sees half a message followed by another one.
//! - Messages sent one after the other by the same task or thread reach the ring in that order.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;

use super::blocking::park_until;
use crate::channel::SendHalf;
use crate::error::{IpcError, Result};
use crate::frame::{fragments, CanonicalHeader, MessageType, HEADER_LEN};
use crate::metrics::{Metrics, WRITE_SAMPLE};

/// The sending half of a connection with its framing state.
pub(super) struct Outbound {
    tx: SendHalf,
    max_message: usize,
    /// The rest of a fragmented message whose sender stopped midway: written before anything else.
    unfinished: Option<Unfinished>,
}

/// What is left of a fragmented message: its type, id and the bytes not yet written.
struct Unfinished {
    kind: MessageType,
    id: u64,
    rest: Bytes,
}

impl Outbound {
    /// Frames messages of at most `max_message` bytes into `tx` (CRC on).
    pub(super) fn new(tx: SendHalf, max_message: usize) -> Outbound {
        Outbound { tx, max_message, unfinished: None }
    }

    /// Largest payload of a one-record message.
    fn record_payload(&self) -> usize {
        self.tx.max_message() - HEADER_LEN
    }

    fn check_size(&self, len: usize) -> Result<()> {
        if len > self.max_message {
            return Err(IpcError::MessageTooLarge { len, max: self.max_message });
        }
        Ok(())
    }

    /// Writes a one-record message now if nothing is unfinished and the ring has room: `false`,
    /// nothing written, otherwise (a fragmented message is never written here).
    fn try_send(&mut self, kind: MessageType, id: u64, payload: &[u8]) -> Result<bool> {
        self.check_size(payload.len())?;
        if self.unfinished.is_some() || payload.len() > self.record_payload() {
            return Ok(false);
        }
        let header = CanonicalHeader::for_payload(kind, id, payload, true).encode();
        let len = HEADER_LEN + payload.len();
        let written = self.tx.try_send_with(len, |buf| {
            buf[..HEADER_LEN].copy_from_slice(&header);
            buf[HEADER_LEN..len].copy_from_slice(payload);
            len
        })?;
        Ok(written.is_some())
    }

    /// Writes a one-record message of at most `len` payload bytes in place: `fill` writes the
    /// payload into the ring and returns its length; the header and CRC follow. `Ok(None)`,
    /// nothing written and `fill` not called, when it cannot be done now.
    fn try_send_in_place(
        &mut self,
        kind: MessageType,
        id: u64,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> usize,
    ) -> Result<Option<usize>> {
        self.check_size(len)?;
        if self.unfinished.is_some() || len > self.record_payload() {
            return Ok(None);
        }
        let mut written = 0;
        let done = self.tx.try_send_with(HEADER_LEN + len, |buf| {
            written = fill(&mut buf[HEADER_LEN..HEADER_LEN + len]).min(len);
            let payload = &buf[HEADER_LEN..HEADER_LEN + written];
            let header = CanonicalHeader::for_payload(kind, id, payload, true).encode();
            buf[..HEADER_LEN].copy_from_slice(&header);
            HEADER_LEN + written
        })?;
        Ok(done.map(|_| written))
    }

    /// Sends a message, waiting (async) for room. Cancel-safe, as the module says. Returns
    /// whether a one-record message had to wait for room (backpressure).
    async fn send_async(&mut self, kind: MessageType, id: u64, payload: &[u8]) -> Result<bool> {
        self.check_size(payload.len())?;
        self.finish_async().await?;
        if payload.len() <= self.record_payload() {
            let mut waited = false;
            while !self.try_send(kind, id, payload)? {
                self.tx.room_async(HEADER_LEN + payload.len()).await?;
                waited = true;
            }
            return Ok(waited);
        }
        let mut sending = Fragmenting { out: self, kind, id, payload, sent: 0 };
        while let Some(room) = sending.write_fragments()? {
            sending.out.tx.room_async(room).await?;
        }
        Ok(false)
    }

    /// Sends a message, waiting (blocking) for room until `deadline`.
    fn send_blocking(
        &mut self,
        kind: MessageType,
        id: u64,
        payload: &[u8],
        deadline: Option<Instant>,
    ) -> Result<()> {
        self.check_size(payload.len())?;
        self.finish_blocking(deadline)?;
        if payload.len() <= self.record_payload() {
            while !self.try_send(kind, id, payload)? {
                self.tx.room_blocking(HEADER_LEN + payload.len(), deadline)?;
            }
            return Ok(());
        }
        let mut sending = Fragmenting { out: self, kind, id, payload, sent: 0 };
        while let Some(room) = sending.write_fragments()? {
            sending.out.tx.room_blocking(room, deadline)?;
        }
        Ok(())
    }

    /// Writes the rest of an unfinished message (async).
    async fn finish_async(&mut self) -> Result<()> {
        while let Some(room) = self.write_unfinished()? {
            self.tx.room_async(room).await?;
        }
        Ok(())
    }

    /// Writes the rest of an unfinished message (blocking).
    fn finish_blocking(&mut self, deadline: Option<Instant>) -> Result<()> {
        while let Some(room) = self.write_unfinished()? {
            self.tx.room_blocking(room, deadline)?;
        }
        Ok(())
    }

    /// Writes what fits of the unfinished message; `Some(bytes)`: the record that must fit
    /// before the next attempt.
    fn write_unfinished(&mut self) -> Result<Option<usize>> {
        let Some(u) = self.unfinished.take() else { return Ok(None) };
        let (sent, room) = write_from(&mut self.tx, u.kind, u.id, &u.rest, 0)?;
        if room.is_some() {
            self.unfinished = Some(Unfinished { rest: u.rest.slice(sent..), ..u });
        }
        Ok(room)
    }

    /// Idle trim: see [`SendHalf::discard_if_empty`].
    fn discard_if_empty(&mut self) -> Result<bool> {
        if self.unfinished.is_some() {
            return Ok(false);
        }
        self.tx.discard_if_empty()
    }
}

/// Writes the fragments of `payload[from..]` (the rest of a message: every fragment but the
/// last says more follow) while the ring has room. Returns how far it got and, if it stopped
/// for room, the size of the record it needs.
fn write_from(
    tx: &mut SendHalf,
    kind: MessageType,
    id: u64,
    payload: &[u8],
    from: usize,
) -> Result<(usize, Option<usize>)> {
    let chunk = tx.max_message() - HEADER_LEN;
    let mut sent = from;
    for fragment in fragments(kind, id, &payload[from..], usize::MAX, chunk, true)? {
        let len = fragment.record_len();
        if tx.try_send_with(len, |buf| fragment.write(&mut buf[..len]))?.is_none() {
            return Ok((sent, Some(len)));
        }
        sent += len - HEADER_LEN;
    }
    Ok((sent, None))
}

/// A fragmented message being written. Dropped midway, it leaves the rest as the outbound's
/// unfinished message.
struct Fragmenting<'a, 'p> {
    out: &'a mut Outbound,
    kind: MessageType,
    id: u64,
    payload: &'p [u8],
    /// Payload bytes written so far.
    sent: usize,
}

impl Fragmenting<'_, '_> {
    /// Writes fragments while there is room: `None` when the message is all written, else the
    /// record size to wait for.
    fn write_fragments(&mut self) -> Result<Option<usize>> {
        let (sent, room) = write_from(&mut self.out.tx, self.kind, self.id, self.payload, self.sent)?;
        self.sent = sent;
        Ok(room)
    }
}

impl Drop for Fragmenting<'_, '_> {
    fn drop(&mut self) {
        if self.sent > 0 && self.sent < self.payload.len() {
            let rest = Bytes::copy_from_slice(&self.payload[self.sent..]);
            self.out.unfinished = Some(Unfinished { kind: self.kind, id: self.id, rest });
        }
    }
}

/// A connection's outgoing side, shared by everything that sends on it.
///
/// The sending half sits in a plain mutex: a message that can be written at once is written
/// under it, with no await. One that must wait (for room, or a fragmented message) checks the
/// half out of the mutex, waits and writes with it, and puts it back; meanwhile other senders
/// wait their turn, in order.
pub(super) struct Outbox {
    state: Mutex<OutState>,
    /// Set when the idle trim gave the ring's pages back; the next write clears it and tells
    /// `resumed`, so the trimming task can sleep without a timer meanwhile.
    trimmed: AtomicBool,
    resumed: Arc<Notify>,
    /// Messages written so far (for the idle trim: nothing written since its last look).
    writes: AtomicU64,
    /// Where sampled write durations and backpressure go (a server's metrics).
    metrics: Option<Arc<Metrics>>,
    /// Frames this connection began to write (counted with metrics on), for sampling.
    frames: AtomicU64,
}

struct OutState {
    /// The sending half, unless a sender has it checked out.
    out: Option<Box<Outbound>>,
    /// Senders waiting to check it out, oldest first, by ticket.
    waiting: VecDeque<(u64, Waker)>,
    next_ticket: u64,
    /// The waiter woken to take it, until it does or gives up.
    handed_to: Option<u64>,
}

impl OutState {
    /// Wakes the oldest waiter when the half is here and nobody was woken for it yet.
    fn hand_off(&mut self) -> Option<Waker> {
        if self.out.is_none() || self.handed_to.is_some() {
            return None;
        }
        let (ticket, waker) = self.waiting.pop_front()?;
        self.handed_to = Some(ticket);
        Some(waker)
    }
}

/// The sending half checked out of its outbox; put back (and the next waiter woken) on drop.
struct CheckedOut<'a> {
    outbox: &'a Outbox,
    out: Option<Box<Outbound>>,
}

impl std::ops::Deref for CheckedOut<'_> {
    type Target = Outbound;
    fn deref(&self) -> &Outbound {
        self.out.as_deref().expect("checked out until dropped")
    }
}

impl std::ops::DerefMut for CheckedOut<'_> {
    fn deref_mut(&mut self) -> &mut Outbound {
        self.out.as_deref_mut().expect("checked out until dropped")
    }
}

impl Drop for CheckedOut<'_> {
    fn drop(&mut self) {
        let mut st = self.outbox.lock();
        st.out = self.out.take();
        let next = st.hand_off();
        drop(st);
        if let Some(w) = next {
            w.wake();
        }
    }
}

/// A sender's place in the queue for the sending half; leaving it (dropped) passes a hand-off
/// meant for it on.
struct Turn<'a> {
    outbox: &'a Outbox,
    ticket: Option<u64>,
}

impl<'a> Turn<'a> {
    /// The half if it is here, else `waker` is queued (once).
    fn poll(&mut self, waker: &Waker) -> Poll<CheckedOut<'a>> {
        let mut st = self.outbox.lock();
        if st.out.is_some() && (st.handed_to.is_none() || st.handed_to == self.ticket) {
            st.handed_to = None;
            let out = st.out.take();
            self.ticket = None;
            return Poll::Ready(CheckedOut { outbox: self.outbox, out });
        }
        match self.ticket {
            Some(t) => {
                if let Some(entry) = st.waiting.iter_mut().find(|(q, _)| *q == t) {
                    entry.1.clone_from(waker);
                }
            }
            None => {
                let t = st.next_ticket;
                st.next_ticket += 1;
                st.waiting.push_back((t, waker.clone()));
                self.ticket = Some(t);
            }
        }
        Poll::Pending
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let Some(t) = self.ticket else { return };
        let mut st = self.outbox.lock();
        st.waiting.retain(|(q, _)| *q != t);
        if st.handed_to == Some(t) {
            st.handed_to = None;
        }
        let next = st.hand_off();
        drop(st);
        if let Some(w) = next {
            w.wake();
        }
    }
}

impl Outbox {
    pub(super) fn new(out: Outbound, metrics: Option<Arc<Metrics>>) -> Outbox {
        Outbox {
            state: Mutex::new(OutState {
                out: Some(Box::new(out)),
                waiting: VecDeque::new(),
                next_ticket: 0,
                handed_to: None,
            }),
            trimmed: AtomicBool::new(false),
            resumed: Arc::new(Notify::new()),
            writes: AtomicU64::new(0),
            metrics,
            frames: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, OutState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the sending half if it is here and nobody waits for it (then a write now
    /// would overtake them).
    fn with_out<T>(&self, f: impl FnOnce(&mut Outbound) -> T) -> Option<T> {
        let mut st = self.lock();
        if !st.waiting.is_empty() || st.handed_to.is_some() {
            return None;
        }
        st.out.as_deref_mut().map(f)
    }

    /// Checks the sending half out, waiting (async) for its turn.
    async fn check_out(&self) -> CheckedOut<'_> {
        let mut turn = Turn { outbox: self, ticket: None };
        poll_fn(|cx| turn.poll(cx.waker())).await
    }

    /// Checks the sending half out, waiting (blocking) for its turn until `deadline`.
    fn check_out_blocking(&self, deadline: Option<Instant>) -> Result<CheckedOut<'_>> {
        let mut turn = Turn { outbox: self, ticket: None };
        park_until(deadline, |waker| turn.poll(waker))
    }

    /// Sends a one-record message now if nobody else is writing and the ring has room; `false`
    /// (nothing written) otherwise, errors included (the waiting send meets them again).
    pub(super) fn try_send(&self, kind: MessageType, id: u64, payload: &[u8]) -> bool {
        let started = self.start_frame();
        let written = matches!(self.with_out(|out| out.try_send(kind, id, payload)), Some(Ok(true)));
        if written {
            self.written(started);
        }
        written
    }

    /// Writes a one-record message in place (see [`Outbound::try_send_in_place`]) if nobody else
    /// is writing and the ring has room: the payload length written, or `None` with `fill` not
    /// called.
    pub(super) fn try_send_in_place(
        &self,
        kind: MessageType,
        id: u64,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> usize,
    ) -> Option<usize> {
        let started = self.start_frame();
        let written =
            self.with_out(|out| out.try_send_in_place(kind, id, len, fill).ok().flatten()).flatten();
        if written.is_some() {
            self.written(started);
        }
        written
    }

    /// Sends a message, waiting (async) for its turn and for room.
    pub(super) async fn send(&self, kind: MessageType, id: u64, payload: &[u8]) -> Result<()> {
        if self.try_send(kind, id, payload) {
            return Ok(());
        }
        let mut out = self.check_out().await;
        let started = self.start_frame();
        let waited_from = Instant::now();
        if out.send_async(kind, id, payload).await? {
            self.backpressure(waited_from);
        }
        self.written(started);
        Ok(())
    }

    /// Sends a message, waiting (blocking) for its turn and for room until `deadline`.
    pub(super) fn send_blocking(
        &self,
        kind: MessageType,
        id: u64,
        payload: &[u8],
        deadline: Option<Instant>,
    ) -> Result<()> {
        if self.try_send(kind, id, payload) {
            return Ok(());
        }
        let mut out = self.check_out_blocking(deadline)?;
        out.send_blocking(kind, id, payload, deadline)?;
        self.written(None);
        Ok(())
    }

    /// Idle trim: gives the outgoing ring's pages back to the OS if nobody is writing, nothing
    /// is unfinished and the peer has read everything. Returns whether the pages are given back
    /// (now or earlier, with nothing written since); then the next write tells
    /// [`resumed`](Self::resumed).
    pub(super) fn trim_if_idle(&self) -> bool {
        let mut st = self.lock();
        let Some(out) = st.out.as_deref_mut() else { return false };
        // Set before looking, under the lock: a write after this point (it takes the same lock
        // or checks the half out under it) sees the flag and tells `resumed`.
        self.trimmed.store(true, Ordering::Release);
        let trimmed = matches!(out.discard_if_empty(), Ok(true));
        if !trimmed {
            self.trimmed.store(false, Ordering::Relaxed);
        }
        trimmed
    }

    /// Told at the first write after a successful [`trim_if_idle`](Self::trim_if_idle).
    pub(super) fn resumed_signal(&self) -> Arc<Notify> {
        self.resumed.clone()
    }

    /// Messages written so far.
    pub(super) fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Counts a frame about to be written (the caller holds the lock) and starts timing it if
    /// it is one of the sampled ones ([`WRITE_SAMPLE`]).
    fn start_frame(&self) -> Option<Instant> {
        self.metrics.as_ref()?;
        // Only the holder of the lock writes it: a plain store, no read-modify-write.
        let n = self.frames.load(Ordering::Relaxed) + 1;
        self.frames.store(n, Ordering::Relaxed);
        n.is_multiple_of(WRITE_SAMPLE).then(Instant::now)
    }

    /// After a write: records a sampled frame's duration and ends an idle trim.
    fn written(&self, started: Option<Instant>) {
        // Only the holder of the lock writes it: a plain store, no read-modify-write.
        self.writes.store(self.writes.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        if let (Some(started), Some(m)) = (started, &self.metrics) {
            m.write_duration.observe_since(started);
        }
        if self.trimmed.load(Ordering::Relaxed) && self.trimmed.swap(false, Ordering::AcqRel) {
            self.resumed.notify_one();
        }
    }

    /// A one-record message found the ring full and has now been written: backpressure (the
    /// peer reads slower than we write), counted with how long it waited. The waits between the
    /// records of a fragmented message are how it is sent, not backpressure.
    fn backpressure(&self, from: Instant) {
        if let Some(m) = &self.metrics {
            m.backpressure_events.inc();
            m.backpressure_wait.observe(from.elapsed());
        }
    }
}

/// Gives a connection's outgoing ring back to the OS once nothing was written for a whole
/// `after` and the peer has read everything, then sleeps without a timer until the next write.
/// The connection is held weakly (never across a wait), and this returns when it is gone; with
/// no `after` it never returns.
pub(super) async fn trim_when_idle<T>(
    conn: Weak<T>,
    after: Option<Duration>,
    outbox: impl Fn(&T) -> &Outbox,
) {
    let Some(after) = after else { return std::future::pending().await };
    let mut seen = None;
    loop {
        tokio::time::sleep(after).await;
        let Some(c) = conn.upgrade() else { return };
        let out = outbox(&c);
        let writes = out.writes();
        if seen == Some(writes) && out.trim_if_idle() {
            let resumed = out.resumed_signal();
            drop(c);
            resumed.notified().await;
            seen = None;
        } else {
            seen = Some(writes);
        }
    }
}
