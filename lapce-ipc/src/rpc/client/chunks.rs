//! The chunks of a streamed answer, read by the [`ResponseStream`](crate::ResponseStream)'s
//! owner itself.

use std::future::poll_fn;
use std::sync::Arc;

use bytes::Bytes;

use super::super::calls::{own_chunk, Ticket, Turn};
use super::super::inbound::Inbound;
use super::super::window::{self, Consumed};
use super::conn::{read_until_own, Conn};
use crate::error::Result;
use crate::frame::MessageType;

/// The state of a [`ResponseStream`]: the chunks of a streamed answer. Dropping it before the end
/// cancels the request on the server.
pub(in crate::rpc) struct Chunks {
    pub(super) conn: Arc<Conn>,
    pub(super) ticket: Ticket,
    pub(super) kind: MessageType,
    /// The reader role, only while `next` reads.
    pub(super) role: Option<Box<Inbound>>,
    pub(super) finished: bool,
    /// What the owner consumed and did not credit back yet, when the client has a stream window.
    pub(super) consumed: Option<Consumed>,
}

impl Chunks {
    /// The next chunk; `None` after the server's `StreamEnd`. An error (the handler's error,
    /// a lost connection) ends the stream.
    pub(in crate::rpc) async fn next(&mut self) -> Option<Result<Bytes>> {
        if self.finished {
            return None;
        }
        if let Some(bytes) = self.consumed.as_ref().and_then(Consumed::due) {
            // Credit the outbox could not take at once: it goes before we wait for more chunks
            // (the server may be waiting for it). Here, before a chunk is taken, the wait is
            // cancel-safe.
            if self
                .conn
                .outbox
                .send(MessageType::StreamWindow, self.ticket.id, &window::encode(bytes))
                .await
                .is_ok()
            {
                self.consumed.as_mut().expect("just seen").credited(bytes);
            }
        }
        let item = self.next_item().await;
        if let Some(inbound) = self.role.take() {
            self.conn.calls.give_back(inbound);
        }
        match &item {
            Some(Ok(chunk)) => self.consume(chunk.len()),
            _ => self.finished = true,
        }
        item
    }

    /// The owner takes a chunk of `len` bytes: a batch of credit goes back to the server when
    /// complete, if the outbox takes it at once (else at the next call).
    fn consume(&mut self, len: usize) {
        let Some(consumed) = &mut self.consumed else { return };
        if !self.conn.calls.windowed() {
            return;
        }
        if let Some(bytes) = consumed.consumed(len) {
            if self.conn.outbox.try_send(MessageType::StreamWindow, self.ticket.id, &window::encode(bytes)) {
                consumed.credited(bytes);
            }
        }
    }

    async fn next_item(&mut self) -> Option<Result<Bytes>> {
        loop {
            if self.role.is_some() {
                let kind = self.kind;
                match read_until_own(&self.conn, self.ticket, &mut self.role, |msg, block| {
                    own_chunk(msg, block, kind)
                })
                .await
                {
                    Ok(Some(item)) => return item,
                    Ok(None) => {
                        if let Some(inbound) = self.role.take() {
                            self.conn.calls.give_back(inbound);
                        }
                    }
                    Err(e) => return Some(Err(e)),
                }
            }
            match poll_fn(|cx| self.conn.calls.poll_stream(self.ticket, cx.waker())).await {
                Turn::Done(item) => return item,
                Turn::Read(inbound) => self.role = Some(inbound),
            }
        }
    }

    /// The request's id on its connection.
    pub(in crate::rpc) fn request_id(&self) -> u64 {
        self.ticket.id
    }
}

impl Drop for Chunks {
    fn drop(&mut self) {
        let running = self.conn.calls.end(self.ticket);
        if let Some(inbound) = self.role.take() {
            self.conn.calls.give_back(inbound);
        }
        if running && !self.finished {
            self.conn.cancel(self.ticket.id);
        }
    }
}
