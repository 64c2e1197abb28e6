//! `futures_core::Stream` and `futures_sink::Sink` for the async framed types, polled straight on
//! the rings (no boxed future, no spin).
//!
//! - As a `Stream`, a receiver yields `Result<Frame>`: each whole message, then `None` once the
//!   peer has closed the connection and every message it sent was delivered. An error (a bad
//!   frame, a peer gone in the middle of a fragmented message, corruption) is yielded once and
//!   ends the stream. The message being reassembled is kept between polls: dropping a `next()`
//!   future loses nothing.
//! - As a `Sink<Frame>`, a sender holds one frame: `start_send` checks its size and keeps it,
//!   `poll_flush` writes its fragments as room allows (progress is kept between polls), and
//!   `poll_ready` flushes the one before. The frame's id is sent as given (as
//!   [`send_with_id`](super::FramedSender::send_with_id) does). `poll_close` flushes; the
//!   connection itself closes when both halves are dropped.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_core::Stream;
use futures_sink::Sink;

use super::{fragment_at, fragment_count, FramedReceiver, FramedSender, FramedStream};
use super::{Reassembly, RecvState, SendState};
use crate::error::{IpcError, Result};
use crate::frame::{Frame, HEADER_LEN};
use crate::{StreamReceiver, StreamSender};

/// The next whole message for a `Stream` poll.
fn poll_frame(
    source: &mut StreamReceiver,
    state: &mut RecvState,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame>>> {
    if state.ended {
        return Poll::Ready(None);
    }
    let outcome = ready!(poll_message(source, state, cx));
    if !matches!(outcome, Some(Ok(_))) {
        state.ended = true;
        state.partial = None;
        state.polled = Vec::new();
    }
    Poll::Ready(outcome)
}

fn poll_message(
    source: &mut StreamReceiver,
    state: &mut RecvState,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame>>> {
    let max = state.max_message;
    loop {
        if let Err(e) = state.broken.check() {
            return Poll::Ready(Some(Err(e)));
        }
        let message = state.partial.get_or_insert_with(|| Reassembly::new(max));
        let polled = &mut state.polled;
        let step = match source.try_recv_with(|record| message.feed(record, polled)) {
            Ok(Some(step)) => step,
            Ok(None) => match ready!(source.poll_readable(cx)) {
                Ok(()) => continue,
                // The peer closed between messages: the clean end of the stream.
                Err(IpcError::PeerGone) if !message.started() => return Poll::Ready(None),
                Err(e) => return Poll::Ready(Some(Err(e))),
            },
            Err(e) => return Poll::Ready(Some(Err(e))),
        };
        match state.broken.record(step) {
            Ok(Some((kind, id))) => {
                state.partial = None;
                return Poll::Ready(Some(Ok(Frame::new(kind, id, std::mem::take(&mut state.polled)))));
            }
            Ok(None) => {}
            Err(e) => return Poll::Ready(Some(Err(e))),
        }
    }
}

/// Keeps `frame` for [`poll_send`], refusing it if it exceeds the maximum.
fn queue(state: &mut SendState, frame: Frame) -> Result<()> {
    if frame.payload.len() > state.max_message {
        return Err(IpcError::MessageTooLarge { len: frame.payload.len(), max: state.max_message });
    }
    if state.queued.is_some() {
        return Err(IpcError::InvalidArgument(
            "Sink::start_send before poll_ready had sent the previous frame".into(),
        ));
    }
    state.queued = Some((frame, 0));
    Ok(())
}

/// Writes the queued frame's remaining fragments as room allows.
fn poll_send(sink: &mut StreamSender, state: &mut SendState, cx: &mut Context<'_>) -> Poll<Result<()>> {
    let chunk = sink.max_message_size() - HEADER_LEN;
    while let Some((frame, next)) = &mut state.queued {
        while *next < fragment_count(frame.payload.len(), chunk) {
            let fragment = fragment_at(frame.kind, frame.id, &frame.payload, chunk, *next, state.with_crc);
            let len = fragment.record_len();
            let written = match ready!(sink.poll_room(len, cx)) {
                Ok(()) => sink.try_send_with(len, |buf| fragment.write(&mut buf[..len])),
                Err(e) => Err(e),
            };
            match written {
                Ok(Some(_)) => *next += 1,
                // Room only grows while we wait (we are the only producer): not reached.
                Ok(None) => {}
                Err(e) => {
                    state.queued = None;
                    return Poll::Ready(Err(e));
                }
            }
        }
        state.queued = None;
    }
    Poll::Ready(Ok(()))
}

impl Stream for FramedReceiver {
    type Item = Result<Frame>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame>>> {
        let this = self.get_mut();
        poll_frame(&mut this.source, &mut this.state, cx)
    }
}

impl Stream for FramedStream {
    type Item = Result<Frame>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame>>> {
        let this = self.get_mut();
        poll_frame(this.stream.receiver_mut(), &mut this.rx, cx)
    }
}

impl Sink<Frame> for FramedSender {
    type Error = IpcError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.poll_flush(cx)
    }
    fn start_send(self: Pin<&mut Self>, frame: Frame) -> Result<()> {
        queue(&mut self.get_mut().state, frame)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        poll_send(&mut this.sink, &mut this.state, cx)
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.poll_flush(cx)
    }
}

impl Sink<Frame> for FramedStream {
    type Error = IpcError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.poll_flush(cx)
    }
    fn start_send(self: Pin<&mut Self>, frame: Frame) -> Result<()> {
        queue(&mut self.get_mut().tx, frame)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        poll_send(this.stream.sender_mut(), &mut this.tx, cx)
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.poll_flush(cx)
    }
}
