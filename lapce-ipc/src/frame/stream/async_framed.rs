//! The tokio flavour of the framed stream: [`FramedStream`] and its halves.

use super::fragment::fragments;
use super::state::{RecvState, SendState};
use crate::error::Result;
use crate::frame::{Frame, MessageType, HEADER_LEN};

/// The tokio flavour of [`BlockingFramedStream`](super::BlockingFramedStream): same framing, same guarantees, over an
/// [`SharedMemoryStream`](crate::SharedMemoryStream).
///
/// It and its receiving half are [`futures_core::Stream`]s of `Result<Frame>`, polled straight
/// on the ring: each whole message, then `None` once the peer has closed the connection and
/// every message it sent was delivered. An error (a bad frame, a peer gone in the middle of a
/// fragmented message) is yielded once and ends the stream. Unlike `recv`, the `Stream` is
/// cancel-safe: the message being reassembled is kept between polls (and a later `recv` goes on
/// with it).
///
/// It and its sending half are [`futures_sink::Sink`]s of [`Frame`], sent with the frame's own
/// id (as [`send_with_id`](Self::send_with_id)). The sink holds one frame: `start_send` refuses
/// one over the maximum, `poll_flush` writes its fragments as room allows (keeping its place
/// between polls, so a cancelled flush can be resumed), `poll_ready` flushes the previous one,
/// and `poll_close` flushes (the connection closes when both halves are dropped).
///
/// ```no_run
/// # async fn run() -> lapce_ipc::Result<()> {
/// use futures::{SinkExt, StreamExt};
/// use lapce_ipc::frame::{FramedStream, Frame, MessageType};
///
/// let stream = lapce_ipc::SharedMemoryStream::connect("framed-echo").await?;
/// let (mut tx, mut rx) = FramedStream::new(stream).into_split();
/// // The inherent `send(kind, payload)` shadows `SinkExt::send`: name the trait.
/// SinkExt::send(&mut tx, Frame::new(MessageType::Chat, 1, b"hello".to_vec())).await?;
/// while let Some(frame) = rx.next().await {
///     println!("{:?}", frame?);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct FramedStream {
    pub(super) stream: crate::SharedMemoryStream,
    pub(super) tx: SendState,
    pub(super) rx: RecvState,
}

impl FramedStream {
    /// Frames `stream` with the defaults: 10 MiB messages, CRC on.
    pub fn new(stream: crate::SharedMemoryStream) -> FramedStream {
        FramedStream { stream, tx: SendState::default(), rx: RecvState::default() }
    }

    /// Sets the largest message accepted in either direction (at most `u32::MAX` bytes).
    pub fn with_max_message(mut self, max: usize) -> FramedStream {
        let max = max.min(u32::MAX as usize);
        (self.tx.max_message, self.rx.max_message) = (max, max);
        self
    }

    /// Turns the payload CRC off for messages we send.
    pub fn with_crc(mut self, on: bool) -> FramedStream {
        self.tx.with_crc = on;
        self
    }

    /// The largest message, in bytes.
    pub fn max_message_size(&self) -> usize {
        self.tx.max_message
    }

    /// The underlying stream.
    pub fn get_mut(&mut self) -> &mut crate::SharedMemoryStream {
        &mut self.stream
    }

    /// Sends `payload` as a message of type `kind` with a fresh id, which is returned.
    pub async fn send(&mut self, kind: MessageType, payload: &[u8]) -> Result<u64> {
        let id = self.tx.fresh_id();
        self.send_with_id(kind, id, payload).await?;
        Ok(id)
    }

    /// Sends `payload` as a message of type `kind` with the given id.
    pub async fn send_with_id(&mut self, kind: MessageType, id: u64, payload: &[u8]) -> Result<()> {
        let chunk = self.stream.max_message_size() - HEADER_LEN;
        for fragment in fragments(kind, id, payload, self.tx.max_message, chunk, self.tx.with_crc)? {
            self.stream.send_with(fragment.record_len(), |buf| fragment.write(buf)).await?;
        }
        Ok(())
    }

    /// Receives the next message: its type, id and payload. Not cancel-safe across fragments:
    /// dropping the future in the middle of a fragmented message loses the fragments read so
    /// far (the `Stream` impl is cancel-safe).
    pub async fn recv(&mut self) -> Result<Frame> {
        let mut frame = Frame::default();
        self.recv_into(&mut frame).await?;
        Ok(frame)
    }

    /// Receives the next message into `frame`, reusing its payload's capacity; see
    /// [`BlockingFramedStream::recv_into`](super::BlockingFramedStream::recv_into). Not cancel-safe across fragments either.
    pub async fn recv_into(&mut self, frame: &mut Frame) -> Result<()> {
        self.rx.recv_into_async(self.stream.receiver_mut(), frame).await
    }

    /// Receives the next message and calls `f` with its type, payload and id, in place when the
    /// message fits one record; see [`BlockingFramedStream::recv_with`](super::BlockingFramedStream::recv_with) (same caveat about untrusted
    /// peers). Not cancel-safe across fragments either.
    pub async fn recv_with<R>(&mut self, f: impl FnOnce(MessageType, &[u8], u64) -> R) -> Result<R> {
        self.rx.recv_with_async(self.stream.receiver_mut(), f).await
    }
}

impl FramedStream {
    /// Splits the stream so that one task receives while others send (e.g. a server reading
    /// requests while handler tasks answer them through a shared sender).
    pub fn into_split(self) -> (FramedSender, FramedReceiver) {
        let (tx, rx) = self.stream.into_split();
        (FramedSender { sink: tx, state: self.tx }, FramedReceiver { source: rx, state: self.rx })
    }
}

/// The sending half of a [`FramedStream`] (see [`FramedStream::into_split`]).
#[derive(Debug)]
pub struct FramedSender {
    pub(super) sink: crate::StreamSender,
    pub(super) state: SendState,
}

impl FramedSender {
    /// The largest message, in bytes.
    pub fn max_message_size(&self) -> usize {
        self.state.max_message
    }

    /// Sends `payload` as a message of type `kind` with a fresh id, which is returned.
    pub async fn send(&mut self, kind: MessageType, payload: &[u8]) -> Result<u64> {
        let id = self.state.fresh_id();
        self.send_with_id(kind, id, payload).await?;
        Ok(id)
    }

    /// Sends `payload` as a message of type `kind` with the given id. All fragments of the
    /// message are written before this returns (dropping the future midway leaves the stream
    /// with a partial message, which the peer refuses; callers that may be cancelled should not
    /// share the sender afterwards).
    pub async fn send_with_id(&mut self, kind: MessageType, id: u64, payload: &[u8]) -> Result<()> {
        let chunk = self.sink.max_message_size() - HEADER_LEN;
        for fragment in fragments(kind, id, payload, self.state.max_message, chunk, self.state.with_crc)? {
            self.sink.send_with(fragment.record_len(), |buf| fragment.write(buf)).await?;
        }
        Ok(())
    }

    /// Whether a payload of `len` bytes fits one ring record (is never fragmented): only such a
    /// message is refused by [`try_send_with_id`](Self::try_send_with_id) for want of room.
    pub fn fits_one_record(&self, len: usize) -> bool {
        len <= self.sink.max_message_size() - HEADER_LEN
    }

    /// Sends a message that fits one ring record without waiting: `Ok(true)` once it is in the
    /// ring, `Ok(false)` with nothing written when it would need fragments or the ring has no
    /// room for it right now. There is no await point, so the message is written whole or not
    /// at all, and the sender stays usable either way. Errors as
    /// [`send_with_id`](Self::send_with_id) (e.g. a message over the maximum), nothing written.
    pub fn try_send_with_id(&mut self, kind: MessageType, id: u64, payload: &[u8]) -> Result<bool> {
        let chunk = self.sink.max_message_size() - HEADER_LEN;
        let mut parts = fragments(kind, id, payload, self.state.max_message, chunk, self.state.with_crc)?;
        if payload.len() > chunk {
            return Ok(false);
        }
        let fragment = parts.next().expect("a message has at least one fragment");
        // Written straight into the ring (no record assembled on the heap), or not at all.
        let len = fragment.record_len();
        Ok(self.sink.try_send_with(len, |buf| fragment.write(&mut buf[..len]))?.is_some())
    }
}

/// The receiving half of a [`FramedStream`] (see [`FramedStream::into_split`]).
#[derive(Debug)]
pub struct FramedReceiver {
    pub(super) source: crate::StreamReceiver,
    pub(super) state: RecvState,
}

impl FramedReceiver {
    /// The largest message, in bytes.
    pub fn max_message_size(&self) -> usize {
        self.state.max_message
    }

    /// Receives the next message. Not cancel-safe across fragments (see
    /// [`FramedStream::recv`]).
    pub async fn recv(&mut self) -> Result<Frame> {
        let mut frame = Frame::default();
        self.recv_into(&mut frame).await?;
        Ok(frame)
    }

    /// Receives the next message into `frame`, reusing its payload's capacity. Not cancel-safe
    /// across fragments (see [`FramedStream::recv`]).
    pub async fn recv_into(&mut self, frame: &mut Frame) -> Result<()> {
        self.state.recv_into_async(&mut self.source, frame).await
    }

    /// Receives the next message and calls `f` with it, in place when it fits one record; see
    /// [`FramedStream::recv_with`].
    pub async fn recv_with<R>(&mut self, f: impl FnOnce(MessageType, &[u8], u64) -> R) -> Result<R> {
        self.state.recv_with_async(&mut self.source, f).await
    }
}
