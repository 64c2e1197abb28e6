//! One live connection of an [`IpcClient`](super::IpcClient) and the calls made over it: a
//! call sends its request, then reads its answer itself while it holds the reader role.

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::task::AbortHandle;

use super::super::calls::{own_answer, Calls, Collect, Ticket, Turn};
use super::super::inbound::{Inbound, Message, PayloadBlock};
use super::super::outbound::Outbox;
use crate::channel::Link;
use crate::error::{IpcError, Result};
use crate::frame::MessageType;

/// One live connection: its calls, where its frames are sent, and the task that watches it.
pub(super) struct Conn {
    pub(super) calls: Calls,
    pub(super) outbox: Outbox,
    pub(super) link: Arc<Link>,
    /// Cleared when the peer hangs up or a read fails.
    pub(super) alive: AtomicBool,
    /// The connection's housekeeping task (hang-up, timeouts, idle trim).
    pub(super) housekeeper: Mutex<Option<AbortHandle>>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(task) = self.housekeeper.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }
}

impl Conn {
    pub(super) fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire) && !self.link.gone_lately()
    }

    /// Cancels request `id` on the server: at once if the outbox is free, else from a task (a
    /// rare case: the outbox is busy or the ring full). Best effort: the server answers into the
    /// void if it finished first. It cannot overtake the request it cancels: the request's send
    /// began before, and a request whose send stopped midway is finished before anything else.
    pub(super) fn cancel(self: &Arc<Conn>, id: u64) {
        if self.outbox.try_send(MessageType::Cancel, id, &[]) {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let conn = self.clone();
            runtime.spawn(async move {
                let _ = conn.outbox.send(MessageType::Cancel, id, &[]).await;
            });
        }
    }

    /// The reader met `error`: the connection is over.
    fn ended(&self, error: &IpcError) {
        self.alive.store(false, Ordering::Release);
        tracing::debug!(%error, "connection to the server ended");
    }

    /// Sends a request and waits for its answer, collected as `collect` says. `swept`: the
    /// sweeper fails it after the default timeout. Dropping the future cancels the request.
    pub(super) async fn call<C: Collect>(
        self: &Arc<Conn>,
        kind: MessageType,
        payload: &[u8],
        swept: bool,
        collect: C,
    ) -> Result<C::Out> {
        let (ticket, role) = self.calls.begin(kind, false, swept)?;
        let mut call = CallGuard { conn: self, ticket, role, sent: true, done: false, ended: false };
        if !self.outbox.try_send(kind, ticket.id, payload) {
            // A caller that waits to send must not hold the role meanwhile: the server may be
            // waiting for room for answers, which only a reader makes.
            call.give_back_role();
            if let Err(e) = self.outbox.send(kind, ticket.id, payload).await {
                call.sent = false;
                return Err(e);
            }
        }
        let out = call.answer(kind, collect).await;
        call.done = true;
        out
    }
}

/// A call in progress: its slot, and the reader role while it holds it. Dropped before its
/// answer came, it cancels the request on the server; however it ends, it gives the role back.
struct CallGuard<'a> {
    conn: &'a Arc<Conn>,
    ticket: Ticket,
    role: Option<Box<Inbound>>,
    /// The request may have reached the server.
    sent: bool,
    /// The answer was taken.
    done: bool,
    /// The call was ended already (its slot is gone).
    ended: bool,
}

impl CallGuard<'_> {
    fn give_back_role(&mut self) {
        if let Some(inbound) = self.role.take() {
            self.conn.calls.give_back(inbound);
        }
    }

    /// Waits for the answer: reads it when it holds the role, else waits for it or the role.
    async fn answer<C: Collect>(&mut self, kind: MessageType, collect: C) -> Result<C::Out> {
        let mut collect = Some(collect);
        loop {
            if self.role.is_some() {
                let conn = self.conn;
                let got = read_until_own(conn, self.ticket, &mut self.role, |msg, block| {
                    own_answer(msg, block, kind, &mut collect)
                })
                .await?;
                if let Some(out) = got {
                    return out;
                }
                // Settled by somebody else (a timeout, the connection's end): take it as owners do.
                self.give_back_role();
            }
            let turn = poll_fn(|cx| self.conn.calls.poll_unary(self.ticket, cx.waker())).await;
            match turn {
                Turn::Done(outcome) => {
                    self.ended = true;
                    let c = collect.take().expect("an answer is collected once");
                    return outcome.map(|bytes| c.collect_bytes(bytes));
                }
                Turn::Read(inbound) => self.role = Some(inbound),
            }
        }
    }
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let running = match self.role.take() {
            Some(inbound) => self.conn.calls.end_giving_back(self.ticket, inbound),
            None => self.conn.calls.end(self.ticket),
        };
        if running && self.sent && !self.done {
            self.conn.cancel(self.ticket.id);
        }
    }
}

/// As the reader (`role` holds the role): reads until `mine` returns `Some` for a message of
/// `call` (returned), or until the call is settled by somebody else (`Ok(None)`). Errors end the
/// connection.
pub(super) async fn read_until_own<T>(
    conn: &Conn,
    call: Ticket,
    role: &mut Option<Box<Inbound>>,
    mut mine: impl FnMut(
        &Message<'_>,
        &mut PayloadBlock,
    ) -> std::result::Result<Option<T>, crate::frame::FrameError>,
) -> Result<Option<T>> {
    let inbound = role.as_mut().expect("the reader holds the role");
    loop {
        match conn.calls.read_ready(inbound, call, |msg, block| mine(&msg, block)) {
            Ok(Some(out)) => return Ok(Some(out)),
            Ok(None) => {}
            Err(e) => {
                conn.ended(&e);
                return Err(e);
            }
        }
        let settled = inbound.rx().readable_or(|cx| conn.calls.poll_settled(call, cx.waker())).await;
        match settled {
            Ok(true) => return Ok(None),
            Ok(false) => {}
            Err(e) => {
                // The peer went away: what it wrote before is read first (the wait said so only
                // once the ring was empty), so nothing answered is lost.
                conn.calls.fail_all(&e);
                conn.ended(&e);
                return Err(e);
            }
        }
    }
}
