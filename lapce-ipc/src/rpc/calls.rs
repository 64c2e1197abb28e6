//! [`Calls`]: the requests in flight on one client connection, and who reads their answers.
//!
//! There is no reader task. A caller waiting for its answer reads the incoming ring itself when
//! nobody else does: it holds the *reader role* (the connection's [`Inbound`], taken out of the
//! table), hands the frames of other calls to their slots and wakes their owners, and once its
//! own answer is in gives the role back, waking one caller that waits for it. A request answered
//! promptly thus costs no task or thread hop: its caller wrote it and reads its answer.
//!
//! Invariant (nothing sits unread while someone waits): whenever an owner waits for the role,
//! either somebody holds it or one waiting owner has been woken to take it (`handed_to`). Every
//! change that frees the role or ends a call restores it through [`hand_off`].
//!
//! Calls live in a slab, so a request allocates nothing once the slab has grown to the most calls
//! in flight. A call's id carries its slot (low 32 bits, plus one: ids are never 0) and a sequence
//! number (high 32 bits), so an answer finds its slot without a hash and a late answer to an
//! earlier call of the same slot is recognised and dropped.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

use bytes::Bytes;
use slab::Slab;
use tokio::sync::Notify;

use super::inbound::{Inbound, Message, PayloadBlock};
use super::notify::{is_notification_type, Hub};
use super::{answer_error, decode_error};
use crate::error::{IpcError, Result};
use crate::frame::{FrameError, MessageType};
use crate::messages::ErrorCode;

/// The calls of one connection.
pub(super) struct Calls {
    table: Mutex<Table>,
    /// Told when a call is added to an empty table (the timeout sweeper sleeps on it meanwhile).
    first_call: Arc<Notify>,
    /// Set with `Table::ended`, for a check without the lock.
    ended: AtomicBool,
    /// The server acknowledged the stream window the client announced (`StreamWindow`, id 0):
    /// it reads credit, so the streams' owners send it. The acknowledgement comes before the
    /// chunks of any stream it applies to, so an owner that takes a chunk finds it set.
    windowed: AtomicBool,
    /// Where notifications go (the client's, across its connections).
    hub: Arc<Hub>,
    /// A listener reads this connection (see [`super::listen`]).
    listening: AtomicBool,
}

struct Table {
    slots: Slab<Slot>,
    /// The incoming side while nobody holds the reader role.
    inbound: Option<Box<Inbound>>,
    /// Slots whose owners wait for the role, oldest first (stale keys are skipped).
    want_role: VecDeque<usize>,
    /// The slot whose owner was woken to take the role, until it does or its call ends.
    handed_to: Option<usize>,
    /// Why the connection ended, once it has: every call fails with it.
    ended: Option<IpcError>,
    /// Sequence number of the next call.
    seq: u32,
    /// Timeout sweeps so far (see [`Calls::sweep`]).
    sweeps: u64,
    /// The listener's waker: woken when the role is free and no owner wants it (it may read),
    /// and when an owner wants the role it holds (it gives it back).
    listener: Option<Waker>,
}

/// One call.
struct Slot {
    id: u64,
    kind: MessageType,
    state: State,
    /// Woken when the call's state changes or the role is handed to it.
    waker: Option<Waker>,
    /// In `want_role`.
    wants_role: bool,
    /// The sweep that fails it with a timeout (unary calls under the default timeout).
    expires: Option<u64>,
}

enum State {
    /// A unary call without its answer yet.
    Waiting,
    /// A unary call's answer (or failure).
    Answered(Result<Bytes>),
    /// A streamed answer: chunks not read by its owner yet, and whether the stream is over.
    Stream { chunks: VecDeque<Result<Bytes>>, ended: bool },
}

/// A call as its owner knows it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ticket {
    pub(super) key: usize,
    pub(super) id: u64,
}

/// What the owner of a call does next.
pub(super) enum Turn<T> {
    /// The call's outcome.
    Done(T),
    /// Read the ring: the role is yours (give it back with [`Calls::give_back`]).
    Read(Box<Inbound>),
}

/// The slot of an id, if the id can be one of ours.
fn key_of(id: u64) -> Option<usize> {
    ((id & 0xFFFF_FFFF) as usize).checked_sub(1)
}

impl Calls {
    pub(super) fn new(inbound: Inbound, hub: Arc<Hub>) -> Calls {
        let table = Table {
            slots: Slab::new(),
            inbound: Some(Box::new(inbound)),
            want_role: VecDeque::new(),
            handed_to: None,
            ended: None,
            seq: 0,
            sweeps: 0,
            listener: None,
        };
        Calls {
            table: Mutex::new(table),
            first_call: Arc::new(Notify::new()),
            ended: AtomicBool::new(false),
            windowed: AtomicBool::new(false),
            hub,
            listening: AtomicBool::new(false),
        }
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a call of type `kind` (`stream`: answered by chunks; `swept`: failed by the sweeper
    /// after the default timeout) and takes the reader role if it is free. Fails with the
    /// connection's end once it has ended.
    pub(super) fn begin(
        &self,
        kind: MessageType,
        stream: bool,
        swept: bool,
    ) -> Result<(Ticket, Option<Box<Inbound>>)> {
        let mut t = self.table();
        if let Some(e) = &t.ended {
            return Err(replay(e));
        }
        if t.slots.is_empty() {
            self.first_call.notify_one();
        }
        t.seq = t.seq.wrapping_add(1);
        let seq = u64::from(t.seq);
        // Sweeps are at least a period apart: the `SWEEPS_PER_TIMEOUT + 1`th after this one
        // comes a whole timeout after this call at the earliest.
        let expires = swept.then_some(t.sweeps + u64::from(SWEEPS_PER_TIMEOUT) + 1);
        let entry = t.slots.vacant_entry();
        let key = entry.key();
        if key >= u32::MAX as usize {
            return Err(IpcError::InvalidArgument("more than 4 billion requests in flight".into()));
        }
        let id = (seq << 32) | (key as u64 + 1);
        let state =
            if stream { State::Stream { chunks: VecDeque::new(), ended: false } } else { State::Waiting };
        entry.insert(Slot { id, kind, state, waker: None, wants_role: false, expires });
        let role = take_role(&mut t);
        Ok((Ticket { key, id }, role))
    }

    /// For the owner of a unary call that does not hold the role: its outcome if it is in (the
    /// call is then ended: [`end`](Self::end) has nothing left to do), else the role if it is
    /// free; else `waker` is kept and the owner waits.
    pub(super) fn poll_unary(&self, call: Ticket, waker: &Waker) -> Poll<Turn<Result<Bytes>>> {
        let mut t = self.table();
        if matches!(t.slots[call.key].state, State::Answered(_)) {
            let State::Answered(outcome) = t.slots.remove(call.key).state else {
                unreachable!("just matched")
            };
            let woken = forget(&mut t, call.key);
            drop(t);
            if let Some(w) = woken {
                w.wake();
            }
            return Poll::Ready(Turn::Done(outcome));
        }
        self.take_role_or_wait(&mut t, call.key, waker)
    }

    /// For the owner of a stream that does not hold the role: its next chunk (`Some`), its end
    /// (`None`), or the role if it is free; else `waker` is kept and the owner waits.
    pub(super) fn poll_stream(&self, call: Ticket, waker: &Waker) -> Poll<Turn<Option<Result<Bytes>>>> {
        let mut t = self.table();
        if let Some(next) = next_chunk(&mut t.slots[call.key]) {
            return Poll::Ready(Turn::Done(next));
        }
        self.take_role_or_wait(&mut t, call.key, waker)
    }

    fn take_role_or_wait<T>(&self, t: &mut Table, key: usize, waker: &Waker) -> Poll<Turn<T>> {
        if let Some(inbound) = take_role(t) {
            t.slots[key].wants_role = false;
            return Poll::Ready(Turn::Read(inbound));
        }
        let slot = &mut t.slots[key];
        keep_waker(slot, waker);
        if !slot.wants_role {
            slot.wants_role = true;
            t.want_role.push_back(key);
            compact_want_role(t);
            // A listener holding the role gives it back.
            if let Some(w) = t.listener.take() {
                w.wake();
            }
        }
        Poll::Pending
    }

    /// For the reader: whether its own call was settled by somebody else meanwhile (the
    /// sweeper's timeout, the connection's end, a chunk queued before it took the role); then
    /// it gives the role back and takes the outcome as any owner does. Else `waker` is kept.
    pub(super) fn poll_settled(&self, call: Ticket, waker: &Waker) -> Poll<()> {
        let mut t = self.table();
        let slot = &mut t.slots[call.key];
        let settled = match &slot.state {
            State::Waiting => false,
            State::Answered(_) => true,
            State::Stream { chunks, ended } => *ended || !chunks.is_empty(),
        };
        if settled {
            return Poll::Ready(());
        }
        keep_waker(slot, waker);
        Poll::Pending
    }

    /// Whether `call` (unary) has its outcome already, set by somebody else than its reader.
    fn answered(&self, call: Ticket) -> bool {
        matches!(self.table().slots.get(call.key).map(|s| &s.state), Some(State::Answered(_)))
    }

    /// Routes a message the reader read (not its own) to the call it answers and wakes the
    /// call's owner. Messages for no call (answers to calls given up, say) are dropped.
    pub(super) fn deliver(&self, msg: Message<'_>, block: &mut PayloadBlock) -> Result<(), FrameError> {
        if msg.id == 0 && msg.kind == MessageType::StreamWindow {
            self.windowed.store(true, Ordering::Release);
            return Ok(());
        }
        if msg.id == 0 && msg.kind == MessageType::Error {
            let body = decode_error(msg.in_place()?);
            if body.code == ErrorCode::UNKNOWN_TYPE {
                // The answer of a server that predates stream windows to our announcement: its
                // streams run without one.
                tracing::debug!(message = %body.message, "the server has no stream windows");
                return Ok(());
            }
            // About the connection itself (e.g. we sent something unreadable): it closes.
            tracing::warn!(code = %body.code, message = %body.message, "server closes the connection");
            return Ok(());
        }
        if msg.id == 0 && is_notification_type(msg.kind) {
            return self.hub.offer(msg.kind, msg.len(), || msg.to_bytes(block));
        }
        let Some(key) = key_of(msg.id) else { return Ok(()) };
        let waker = {
            let mut t = self.table();
            let Some(slot) = t.slots.get_mut(key).filter(|s| s.id == msg.id) else { return Ok(()) };
            if !settle(slot, &msg, block)? {
                return Ok(());
            }
            // Its owner comes for the outcome, not for the role.
            slot.wants_role = false;
            slot.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Gives the reader role back and wakes an owner that waits for it, if any.
    pub(super) fn give_back(&self, inbound: Box<Inbound>) {
        let mut t = self.table();
        t.inbound = Some(inbound);
        let woken = hand_off(&mut t);
        drop(t);
        if let Some(w) = woken {
            w.wake();
        }
    }

    /// Ends a call (its owner is done with it, whatever happened). Returns whether its request
    /// was still unanswered, i.e. still running on the server as far as we know (then the owner
    /// cancels it there).
    pub(super) fn end(&self, call: Ticket) -> bool {
        self.end_with(call, None)
    }

    /// [`end`](Self::end) and [`give_back`](Self::give_back) at once, for a reader that is done.
    pub(super) fn end_giving_back(&self, call: Ticket, inbound: Box<Inbound>) -> bool {
        self.end_with(call, Some(inbound))
    }

    fn end_with(&self, call: Ticket, inbound: Option<Box<Inbound>>) -> bool {
        let mut t = self.table();
        if inbound.is_some() {
            t.inbound = inbound;
        }
        let running = match t.slots.get(call.key).filter(|s| s.id == call.id) {
            Some(slot) => {
                let unanswered = match &slot.state {
                    State::Waiting => true,
                    State::Answered(_) => false,
                    State::Stream { ended, .. } => !ended,
                };
                t.slots.remove(call.key);
                // After the connection's end there is nobody to cancel anything with.
                unanswered && t.ended.is_none()
            }
            None => false,
        };
        let woken = forget(&mut t, call.key);
        drop(t);
        if let Some(w) = woken {
            w.wake();
        }
        running
    }

    /// The connection ended (the reader met `error`): every call fails with it, now and later.
    pub(super) fn fail_all(&self, error: &IpcError) {
        let mut wakers = Vec::new();
        {
            let mut t = self.table();
            if t.ended.is_none() {
                t.ended = Some(replay(error));
                self.ended.store(true, Ordering::Release);
            }
            for (_, slot) in t.slots.iter_mut() {
                match &mut slot.state {
                    State::Waiting => slot.state = State::Answered(Err(replay(error))),
                    State::Stream { chunks, ended } if !*ended => {
                        chunks.push_back(Err(replay(error)));
                        *ended = true;
                    }
                    _ => {}
                }
                wakers.extend(slot.waker.take());
            }
            wakers.extend(t.listener.take());
        }
        for w in wakers {
            w.wake();
        }
    }

    /// Whether the server reads stream credit (it acknowledged our window).
    pub(super) fn windowed(&self) -> bool {
        self.windowed.load(Ordering::Acquire)
    }

    /// Whether the connection has ended.
    pub(super) fn has_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// Whether no call is in flight.
    pub(super) fn is_empty(&self) -> bool {
        self.table().slots.is_empty()
    }

    /// Told when a call is added to an empty table (a notification with nobody waiting is kept
    /// for the next wait).
    pub(super) fn first_call_signal(&self) -> Arc<Notify> {
        self.first_call.clone()
    }

    /// One timeout sweep: fails the unary calls under the default timeout whose last sweep has
    /// come with [`IpcError::Timeout`] and calls `cancel` with each one's id.
    pub(super) fn sweep(&self, mut cancel: impl FnMut(u64)) {
        let mut wakers = Vec::new();
        {
            let mut t = self.table();
            t.sweeps += 1;
            let sweep = t.sweeps;
            for (_, slot) in t.slots.iter_mut() {
                if matches!(slot.state, State::Waiting) && slot.expires.is_some_and(|at| at <= sweep) {
                    slot.state = State::Answered(Err(IpcError::Timeout));
                    wakers.extend(slot.waker.take());
                    cancel(slot.id);
                }
            }
        }
        for w in wakers {
            w.wake();
        }
    }
}

/// How many times per default request timeout the sweeper looks for calls over it. (A precise
/// timer per request, armed and cleared around each one, was the largest single cost of a
/// request under load.) So a call under the default timeout fails between one and
/// `1 + 1/SWEEPS_PER_TIMEOUT` timeouts after it began.
pub(super) const SWEEPS_PER_TIMEOUT: u32 = 8;

/// Takes the role if it is free (a caller that takes it ends any hand-off under way: the owner
/// woken for it waits for it again when it finds it taken).
fn take_role(t: &mut Table) -> Option<Box<Inbound>> {
    let inbound = t.inbound.take()?;
    t.handed_to = None;
    Some(inbound)
}

/// After the call of slot `key` ended: a hand-off meant for it goes to the next owner waiting.
fn forget(t: &mut Table, key: usize) -> Option<Waker> {
    if t.handed_to == Some(key) {
        t.handed_to = None;
    }
    hand_off(t)
}

/// Restores the invariant: when the role is free and no hand-off is under way, wakes the oldest
/// owner waiting for the role (returned, to be woken once the lock is released).
fn hand_off(t: &mut Table) -> Option<Waker> {
    if t.inbound.is_none() || t.handed_to.is_some() {
        return None;
    }
    while let Some(key) = t.want_role.pop_front() {
        let Some(slot) = t.slots.get_mut(key) else { continue };
        if !slot.wants_role {
            continue;
        }
        slot.wants_role = false;
        t.handed_to = Some(key);
        return slot.waker.take();
    }
    // Nobody wants it: the listener (if any) may read.
    t.listener.take()
}

/// Drops the stale keys of `want_role` (calls answered or ended since they queued) once it holds
/// more than twice the calls there are, so it stays bounded however long one reader keeps the
/// role. (A key left twice is harmless: the second finds its wish taken care of.)
fn compact_want_role(t: &mut Table) {
    if t.want_role.len() > 2 * t.slots.len() + 16 {
        let Table { want_role, slots, .. } = t;
        want_role.retain(|&k| slots.get(k).is_some_and(|s| s.wants_role));
    }
}

/// Keeps `waker` in the slot (no clone when it is the same one).
fn keep_waker(slot: &mut Slot, waker: &Waker) {
    match &slot.waker {
        Some(w) if w.will_wake(waker) => {}
        _ => slot.waker = Some(waker.clone()),
    }
}

/// A stream's next queued chunk, or its end (`Some(None)`); `None` when there is nothing yet.
fn next_chunk(slot: &mut Slot) -> Option<Option<Result<Bytes>>> {
    match &mut slot.state {
        State::Stream { chunks, ended } => match chunks.pop_front() {
            Some(chunk) => Some(Some(chunk)),
            None if *ended => Some(None),
            None => None,
        },
        // (A unary slot has no chunks; its owner does not ask.)
        _ => None,
    }
}

/// Applies a message to the call it answers; whether the call's state changed.
fn settle(slot: &mut Slot, msg: &Message<'_>, block: &mut PayloadBlock) -> Result<bool, FrameError> {
    let kind = slot.kind;
    match (&mut slot.state, msg.kind) {
        (State::Waiting, MessageType::Response | MessageType::Heartbeat) => {
            slot.state = State::Answered(Ok(msg.to_bytes(block)?));
        }
        (State::Waiting, MessageType::Error) => {
            slot.state = State::Answered(Err(answer_error(kind, decode_error(msg.in_place()?))));
        }
        (State::Stream { chunks, ended: false }, MessageType::StreamChunk) => {
            chunks.push_back(Ok(msg.to_bytes(block)?));
        }
        (State::Stream { ended: ended @ false, .. }, MessageType::StreamEnd) => *ended = true,
        (State::Stream { chunks, ended: ended @ false }, MessageType::Error) => {
            chunks.push_back(Err(answer_error(kind, decode_error(msg.in_place()?))));
            *ended = true;
        }
        (_, other) => {
            tracing::debug!(kind = ?other, id = msg.id, "ignoring an unexpected frame from the server");
            return Ok(false);
        }
    }
    Ok(true)
}

/// The error a call fails with after the connection ended with `error`.
pub(super) fn replay(error: &IpcError) -> IpcError {
    match error {
        IpcError::Corrupted(why) => IpcError::Corrupted(why.clone()),
        IpcError::Frame(e) => IpcError::Frame(e.clone()),
        _ => IpcError::PeerGone,
    }
}

impl Calls {
    /// As the reader: reads every whole message the ring holds; those of other calls go to
    /// their slots, those of `call` to `mine`, until `mine` returns `Some`. `Ok(None)`: the ring
    /// is empty. A read error ends the connection: every call fails with it, and so does this.
    pub(super) fn read_ready<T>(
        &self,
        inbound: &mut Inbound,
        call: Ticket,
        mut mine: impl FnMut(Message<'_>, &mut PayloadBlock) -> Result<Option<T>, FrameError>,
    ) -> Result<Option<T>> {
        loop {
            let read = inbound.try_next(|msg, block| {
                if msg.id == call.id {
                    // An error answer to a call the sweeper failed already is the server's reply
                    // to the cancel the sweeper sent: the call's outcome is the timeout.
                    if msg.kind == MessageType::Error && self.answered(call) {
                        return Ok(None);
                    }
                    mine(msg, block)
                } else {
                    self.deliver(msg, block).map(|()| None)
                }
            });
            match read {
                Ok(None) => return Ok(None),
                Ok(Some(Some(out))) => {
                    self.deliver_ready(inbound);
                    return Ok(Some(out));
                }
                Ok(Some(None)) => {}
                Err(e) => {
                    self.fail_all(&e);
                    return Err(e);
                }
            }
        }
    }
}

impl Calls {
    /// As the reader, after its own message: hands out up to [`DRAIN`] more messages the ring
    /// holds already, so that the next reader's turn comes after a batch rather than after each
    /// answer (many requests in flight). A read error is left for the next read to meet.
    fn deliver_ready(&self, inbound: &mut Inbound) {
        for _ in 0..DRAIN {
            match inbound.try_next(|msg, block| self.deliver(msg, block)) {
                Ok(Some(())) => {}
                Ok(None) | Err(_) => return,
            }
        }
    }
}

impl Calls {
    /// Marks the connection as read by a listener; `false` if one was already.
    pub(super) fn start_listening(&self) -> bool {
        !self.listening.swap(true, Ordering::AcqRel)
    }

    /// For the listener: the role when it is free and no owner wants it (`Some`), or `None` once
    /// the connection has ended; else `waker` is kept.
    pub(super) fn poll_listen(&self, waker: &Waker) -> Poll<Option<Box<Inbound>>> {
        let mut t = self.table();
        if t.ended.is_some() {
            return Poll::Ready(None);
        }
        if t.handed_to.is_none() && !wanted(&t) {
            if let Some(inbound) = t.inbound.take() {
                return Poll::Ready(Some(inbound));
            }
        }
        t.listener = Some(waker.clone());
        Poll::Pending
    }

    /// For the listener holding the role: ready when an owner wants it; else `waker` is kept.
    pub(super) fn poll_wanted(&self, waker: &Waker) -> Poll<()> {
        let mut t = self.table();
        if wanted(&t) {
            return Poll::Ready(());
        }
        t.listener = Some(waker.clone());
        Poll::Pending
    }
}

impl Drop for Calls {
    /// A listener waiting on this connection learns that it is gone.
    fn drop(&mut self) {
        if let Some(w) = self.table().listener.take() {
            w.wake();
        }
    }
}

/// Whether an owner waits for the role.
fn wanted(t: &Table) -> bool {
    t.want_role.iter().any(|&k| t.slots.get(k).is_some_and(|s| s.wants_role))
}

/// Messages a reader hands out after its own before it returns.
const DRAIN: usize = 32;

/// How a caller wants its answer: as owned bytes, or looked at in place.
pub(super) trait Collect {
    type Out;
    /// From a message the caller read itself (a one-record answer still in the ring).
    fn collect_message(self, msg: &Message<'_>, block: &mut PayloadBlock) -> Result<Self::Out, FrameError>;
    /// From an answer another reader copied out for it.
    fn collect_bytes(self, bytes: Bytes) -> Self::Out;
}

/// The answer as [`Bytes`] (one copy out of the ring, checked on the copy).
pub(super) struct ToBytes;

impl Collect for ToBytes {
    type Out = Bytes;
    fn collect_message(self, msg: &Message<'_>, block: &mut PayloadBlock) -> Result<Bytes, FrameError> {
        msg.to_bytes(block)
    }
    fn collect_bytes(self, bytes: Bytes) -> Bytes {
        bytes
    }
}

/// The answer handed to a closure in place (checked first; see [`Message::in_place`]).
pub(super) struct InPlace<F>(pub(super) F);

impl<F: FnOnce(&[u8]) -> R, R> Collect for InPlace<F> {
    type Out = R;
    fn collect_message(self, msg: &Message<'_>, _block: &mut PayloadBlock) -> Result<R, FrameError> {
        Ok((self.0)(msg.in_place()?))
    }
    fn collect_bytes(self, bytes: Bytes) -> R {
        (self.0)(&bytes)
    }
}

/// The reader's own unary answer: `Some` for a `Response` (or `Heartbeat`) collected as asked, or
/// an `Error` as the error it says; `None` for anything else (ignored). `collect` is used once.
pub(super) fn own_answer<C: Collect>(
    msg: &Message<'_>,
    block: &mut PayloadBlock,
    kind: MessageType,
    collect: &mut Option<C>,
) -> Result<Option<Result<C::Out>>, FrameError> {
    match msg.kind {
        MessageType::Response | MessageType::Heartbeat => {
            let c = collect.take().expect("an answer is collected once");
            Ok(Some(Ok(c.collect_message(msg, block)?)))
        }
        MessageType::Error => Ok(Some(Err(answer_error(kind, decode_error(msg.in_place()?))))),
        _ => Ok(None),
    }
}

/// The reader's own stream message: `Some(Some(chunk))`, `Some(None)` at its end, an error
/// chunk for an `Error`; `None` for anything else (ignored).
pub(super) fn own_chunk(
    msg: &Message<'_>,
    block: &mut PayloadBlock,
    kind: MessageType,
) -> Result<Option<Option<Result<Bytes>>>, FrameError> {
    Ok(match msg.kind {
        MessageType::StreamChunk => Some(Some(Ok(msg.to_bytes(block)?))),
        MessageType::StreamEnd => Some(None),
        MessageType::Error => Some(Some(Err(answer_error(kind, decode_error(msg.in_place()?))))),
        _ => None,
    })
}
