//! [`BlockingFramedStream`]: typed, identified, checksummed messages of any size (up to a configured
//! maximum) over a [`BlockingSharedMemoryStream`](crate::BlockingSharedMemoryStream).

use std::fmt;

use crate::error::{IpcError, Result};
use crate::frame::{CanonicalHeader, Frame, FrameError, FrameFlags, MessageType, HEADER_LEN};
use crate::{BlockingSharedMemoryStream, BlockingStreamReceiver, BlockingStreamSender};

#[cfg(feature = "tokio")]
mod traits;

/// Default largest message: 10 MiB.
pub const DEFAULT_MAX_MESSAGE: usize = 10 << 20;

/// A message stream with the canonical header on every record (blocking flavour).
///
/// A message larger than one ring record is split into fragments, each a record with its own
/// header (same type and id, `MORE_FRAGMENTS` on all but the last, each fragment's own length
/// and CRC) and reassembled on receipt; the sender writes one message's fragments back to back,
/// so fragments of different messages never interleave. Messages above the maximum are refused
/// before anything is written (sender) or as soon as their size is known (receiver).
///
/// A frame that fails validation (bad magic, version, flags, CRC, an oversized or inconsistent
/// message) is reported as an error and the stream is closed for good: the ring delivers
/// records reliably and in order, so a bad frame means a broken or hostile peer, and guessing
/// where its next message starts could attribute fragments to the wrong message.
///
/// Three ways to receive, from simplest to cheapest: [`recv`](Self::recv) returns a new vector
/// per message, [`recv_into`](Self::recv_into) fills a buffer you reuse (no allocation), and
/// [`recv_with`](Self::recv_with) lends you a one-record message in place (no copy either).
/// [`into_split`](Self::into_split) gives a sending and a receiving half, for two threads or
/// for answering a request from inside `recv_with`.
///
/// ```
/// use lapce_ipc::frame::{BlockingFramedStream, MessageType};
/// use lapce_ipc::{BlockingSharedMemoryListener, BlockingSharedMemoryStream};
///
/// let name = format!("framed-doc-{}", std::process::id());
/// let listener = BlockingSharedMemoryListener::bind(&name)?;
/// let client = std::thread::spawn(move || -> lapce_ipc::Result<()> {
///     let mut framed = BlockingFramedStream::new(BlockingSharedMemoryStream::connect(&name)?);
///     let big = vec![7u8; 1 << 20]; // larger than a ring record: sent as fragments
///     framed.send(MessageType::Data, &big)?;
///     Ok(())
/// });
/// let mut framed = BlockingFramedStream::new(listener.accept()?);
/// let frame = framed.recv()?;
/// assert_eq!((frame.kind, frame.payload.len()), (MessageType::Data, 1 << 20));
/// client.join().unwrap()?;
/// # Ok::<(), lapce_ipc::IpcError>(())
/// ```
#[derive(Debug)]
pub struct BlockingFramedStream {
    stream: BlockingSharedMemoryStream,
    tx: SendState,
    rx: RecvState,
}

impl BlockingFramedStream {
    /// Frames `stream` with the defaults: 10 MiB messages, CRC on.
    pub fn new(stream: BlockingSharedMemoryStream) -> BlockingFramedStream {
        BlockingFramedStream { stream, tx: SendState::default(), rx: RecvState::default() }
    }

    /// Sets the largest message accepted in either direction (at most `u32::MAX` bytes).
    pub fn with_max_message(mut self, max: usize) -> BlockingFramedStream {
        let max = max.min(u32::MAX as usize);
        (self.tx.max_message, self.rx.max_message) = (max, max);
        self
    }

    /// Turns the payload CRC off for messages we send (faster; the header is still checked).
    pub fn with_crc(mut self, on: bool) -> BlockingFramedStream {
        self.tx.with_crc = on;
        self
    }

    /// The largest message, in bytes.
    pub fn max_message_size(&self) -> usize {
        self.tx.max_message
    }

    /// Largest payload that travels as a single ring record (larger ones are fragmented).
    pub fn single_record_limit(&self) -> usize {
        self.stream.max_message_size() - HEADER_LEN
    }

    /// The underlying stream.
    pub fn get_mut(&mut self) -> &mut BlockingSharedMemoryStream {
        &mut self.stream
    }

    /// Splits the stream so that one thread can send while another receives, or so that a
    /// server can answer from inside [`BlockingFramedReceiver::recv_with`] (the request read in place,
    /// the reply written straight into the outgoing ring). Settings, the next id and a broken
    /// state carry over.
    pub fn into_split(self) -> (BlockingFramedSender, BlockingFramedReceiver) {
        let (tx, rx) = self.stream.into_split();
        (
            BlockingFramedSender { sink: tx, state: self.tx },
            BlockingFramedReceiver { source: rx, state: self.rx },
        )
    }

    /// Sends `payload` as a message of type `kind` with a fresh id, which is returned.
    pub fn send(&mut self, kind: MessageType, payload: &[u8]) -> Result<u64> {
        let id = self.tx.fresh_id();
        self.send_with_id(kind, id, payload)?;
        Ok(id)
    }

    /// Sends `payload` as a message of type `kind` with the given id (to answer a request).
    pub fn send_with_id(&mut self, kind: MessageType, id: u64, payload: &[u8]) -> Result<()> {
        self.tx.send(&mut self.stream, kind, id, payload)
    }

    /// Receives the next message: its type, id and payload. The payload is copied out of the
    /// ring into a new vector and checked there; see [`recv_into`](Self::recv_into) to reuse a
    /// buffer and [`recv_with`](Self::recv_with) to look at the payload in place.
    pub fn recv(&mut self) -> Result<Frame> {
        let mut frame = Frame::default();
        self.recv_into(&mut frame)?;
        Ok(frame)
    }

    /// Receives the next message into `frame`: its type and id, and its payload into
    /// `frame.payload` (cleared first; its capacity is reused, so a loop over one frame
    /// allocates nothing once the payload buffer is large enough). The bytes are copied out of
    /// the ring before their CRC is checked, so what was checked is what you get, whatever the
    /// peer does to the ring afterwards. On error the frame's contents are unspecified.
    pub fn recv_into(&mut self, frame: &mut Frame) -> Result<()> {
        (frame.kind, frame.id) = self.rx.recv_into(&mut self.stream, &mut frame.payload)?;
        Ok(())
    }

    /// Receives the next message and calls `f` with its type, payload and id; returns what `f`
    /// returns. A message that fits one ring record is handed over in place, without a copy:
    /// header and CRC are checked first, then `f` runs on the bytes in the ring, and the record
    /// is freed when `f` returns (keep `f` short: the sender may be waiting for the room). A
    /// fragmented message is reassembled into a buffer the stream keeps for the next call (up
    /// to 1 MiB of it).
    ///
    /// As with [`BlockingSharedMemoryStream::recv_with`], a peer that breaks the protocol could change
    /// the bytes in the ring while `f` looks at them (after they were checked); with an untrusted
    /// peer, use [`recv_into`](Self::recv_into), which checks a private copy.
    pub fn recv_with<R>(&mut self, f: impl FnOnce(MessageType, &[u8], u64) -> R) -> Result<R> {
        self.rx.recv_with(&mut self.stream, f)
    }
}

/// The sending half of a [`BlockingFramedStream`] (see [`BlockingFramedStream::into_split`]).
#[derive(Debug)]
pub struct BlockingFramedSender {
    sink: BlockingStreamSender,
    state: SendState,
}

impl BlockingFramedSender {
    /// The largest message, in bytes.
    pub fn max_message_size(&self) -> usize {
        self.state.max_message
    }

    /// Sends `payload` as a message of type `kind` with a fresh id, which is returned.
    pub fn send(&mut self, kind: MessageType, payload: &[u8]) -> Result<u64> {
        let id = self.state.fresh_id();
        self.send_with_id(kind, id, payload)?;
        Ok(id)
    }

    /// Sends `payload` as a message of type `kind` with the given id.
    pub fn send_with_id(&mut self, kind: MessageType, id: u64, payload: &[u8]) -> Result<()> {
        self.state.send(&mut self.sink, kind, id, payload)
    }
}

/// The receiving half of a [`BlockingFramedStream`] (see [`BlockingFramedStream::into_split`]).
///
/// ```
/// use lapce_ipc::frame::{Frame, BlockingFramedStream, MessageType};
/// use lapce_ipc::{BlockingSharedMemoryListener, BlockingSharedMemoryStream};
///
/// let name = format!("framed-split-doc-{}", std::process::id());
/// let listener = BlockingSharedMemoryListener::bind(&name)?;
/// let server = std::thread::spawn(move || -> lapce_ipc::Result<()> {
///     let (mut tx, mut rx) = BlockingFramedStream::new(listener.accept()?).into_split();
///     // An echo that copies the request straight from one ring into the other.
///     rx.recv_with(|kind, request, id| tx.send_with_id(kind, id, request))?
/// });
/// let mut client = BlockingFramedStream::new(BlockingSharedMemoryStream::connect(&name)?);
/// let id = client.send(MessageType::Chat, b"hello")?;
/// assert_eq!(client.recv()?, Frame::new(MessageType::Chat, id, b"hello".to_vec()));
/// server.join().unwrap()?;
/// # Ok::<(), lapce_ipc::IpcError>(())
/// ```
#[derive(Debug)]
pub struct BlockingFramedReceiver {
    source: BlockingStreamReceiver,
    state: RecvState,
}

impl BlockingFramedReceiver {
    /// The largest message, in bytes.
    pub fn max_message_size(&self) -> usize {
        self.state.max_message
    }

    /// Receives the next message; see [`BlockingFramedStream::recv`].
    pub fn recv(&mut self) -> Result<Frame> {
        let mut frame = Frame::default();
        self.recv_into(&mut frame)?;
        Ok(frame)
    }

    /// Receives the next message into `frame`; see [`BlockingFramedStream::recv_into`].
    pub fn recv_into(&mut self, frame: &mut Frame) -> Result<()> {
        (frame.kind, frame.id) = self.state.recv_into(&mut self.source, &mut frame.payload)?;
        Ok(())
    }

    /// Receives the next message and calls `f` with it, in place when it fits one record; see
    /// [`BlockingFramedStream::recv_with`] (same caveat about untrusted peers).
    pub fn recv_with<R>(&mut self, f: impl FnOnce(MessageType, &[u8], u64) -> R) -> Result<R> {
        self.state.recv_with(&mut self.source, f)
    }
}

/// Where the blocking framed types write their records.
trait RecordSink {
    /// Largest record.
    fn record_limit(&self) -> usize;
    /// Reserves `len` bytes, lets `fill` write them, publishes (waiting for room).
    fn send_record(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> usize) -> Result<usize>;
}

impl RecordSink for BlockingSharedMemoryStream {
    fn record_limit(&self) -> usize {
        self.max_message_size()
    }
    fn send_record(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> usize) -> Result<usize> {
        self.send_with(len, fill)
    }
}

impl RecordSink for BlockingStreamSender {
    fn record_limit(&self) -> usize {
        self.max_message_size()
    }
    fn send_record(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> usize) -> Result<usize> {
        self.send_with(len, fill)
    }
}

/// Where the blocking framed types read their records.
trait RecordSource {
    /// Waits for the next record and calls `f` with it in place.
    fn recv_record<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Result<R>;
}

impl RecordSource for BlockingSharedMemoryStream {
    fn recv_record<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        self.recv_with(f)
    }
}

impl RecordSource for BlockingStreamReceiver {
    fn recv_record<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        self.recv_with(f)
    }
}

/// Settings and state of the sending side.
struct SendState {
    max_message: usize,
    with_crc: bool,
    next_id: u64,
    /// The frame a `Sink` was given and has not written whole yet, and its next fragment.
    queued: Option<(Frame, usize)>,
}

/// The settings and the next id, never a queued payload.
impl fmt::Debug for SendState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendState")
            .field("max_message", &self.max_message)
            .field("with_crc", &self.with_crc)
            .field("next_id", &self.next_id)
            .field("queued", &self.queued.as_ref().map(|(frame, _)| frame))
            .finish()
    }
}

impl Default for SendState {
    fn default() -> SendState {
        SendState { max_message: DEFAULT_MAX_MESSAGE, with_crc: true, next_id: 1, queued: None }
    }
}

impl SendState {
    /// A new message id.
    fn fresh_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        id
    }

    /// Sends one message as one or more records, each header and payload part written straight
    /// into the ring.
    fn send(&self, sink: &mut impl RecordSink, kind: MessageType, id: u64, payload: &[u8]) -> Result<()> {
        let chunk = sink.record_limit() - HEADER_LEN;
        for fragment in fragments(kind, id, payload, self.max_message, chunk, self.with_crc)? {
            sink.send_record(fragment.record_len(), |buf| fragment.write(buf))?;
        }
        Ok(())
    }
}

/// Settings and state of the receiving side.
struct RecvState {
    max_message: usize,
    broken: Broken,
    /// Where `recv_with` reassembles fragmented messages (kept between calls, up to
    /// [`KEEP_REASSEMBLY_BUF`]).
    reassembly_buf: Vec<u8>,
    /// The message a `Stream` poll is reassembling (its bytes so far in `polled`): kept between
    /// polls, so that the stream is cancel-safe, and taken over by the next receive call.
    partial: Option<Reassembly>,
    polled: Vec<u8>,
    /// The `Stream` ended (the peer closed, or after the error it yielded).
    ended: bool,
}

impl Default for RecvState {
    fn default() -> RecvState {
        RecvState {
            max_message: DEFAULT_MAX_MESSAGE,
            broken: Broken::default(),
            reassembly_buf: Vec::new(),
            partial: None,
            polled: Vec::new(),
            ended: false,
        }
    }
}

/// The settings and the broken state, never the buffers.
impl fmt::Debug for RecvState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvState")
            .field("max_message", &self.max_message)
            .field("broken", &self.broken.0)
            .finish()
    }
}

impl RecvState {
    /// The message to go on with: the one a `Stream` poll left half reassembled (its bytes
    /// moved to `payload`), else a new one; `payload` is cleared first.
    fn resume(&mut self, payload: &mut Vec<u8>) -> Reassembly {
        payload.clear();
        match self.partial.take() {
            Some(message) if message.started() => {
                payload.append(&mut self.polled);
                message
            }
            _ => Reassembly::new(self.max_message),
        }
    }

    #[cfg(feature = "tokio")]
    async fn recv_into_async(&mut self, source: &mut crate::StreamReceiver, frame: &mut Frame) -> Result<()> {
        let payload = &mut frame.payload;
        let mut message = self.resume(payload);
        loop {
            self.broken.check()?;
            let step = source.recv_with(|record| message.feed(record, payload)).await?;
            if let Some((kind, id)) = self.broken.record(step)? {
                (frame.kind, frame.id) = (kind, id);
                return Ok(());
            }
        }
    }

    #[cfg(feature = "tokio")]
    async fn recv_with_async<R>(
        &mut self,
        source: &mut crate::StreamReceiver,
        f: impl FnOnce(MessageType, &[u8], u64) -> R,
    ) -> Result<R> {
        let mut buf = std::mem::take(&mut self.reassembly_buf);
        let mut message = self.resume(&mut buf);
        let mut f = Some(f);
        let outcome = loop {
            if let Err(e) = self.broken.check() {
                break Err(e);
            }
            let step = match source.recv_with(|record| message.feed_in_place(record, &mut buf, &mut f)).await
            {
                Ok(step) => step,
                Err(e) => break Err(e),
            };
            match self.broken.record(step) {
                Ok(Fed::InPlace(r)) => break Ok(r),
                Ok(Fed::Complete(kind, id)) => break Ok(deliver(f, kind, &mut buf, id)),
                Ok(Fed::More) => {}
                Err(e) => break Err(e),
            }
        };
        self.reassembly_buf = buf;
        outcome
    }

    fn recv_into(
        &mut self,
        source: &mut impl RecordSource,
        payload: &mut Vec<u8>,
    ) -> Result<(MessageType, u64)> {
        payload.clear();
        let mut message = Reassembly::new(self.max_message);
        loop {
            self.broken.check()?;
            let step = source.recv_record(|record| message.feed(record, payload))?;
            if let Some(done) = self.broken.record(step)? {
                return Ok(done);
            }
        }
    }

    fn recv_with<R>(
        &mut self,
        source: &mut impl RecordSource,
        f: impl FnOnce(MessageType, &[u8], u64) -> R,
    ) -> Result<R> {
        let mut message = Reassembly::new(self.max_message);
        let mut f = Some(f);
        let buf = &mut self.reassembly_buf;
        buf.clear();
        loop {
            self.broken.check()?;
            let step = source.recv_record(|record| message.feed_in_place(record, buf, &mut f))?;
            match self.broken.record(step)? {
                Fed::InPlace(r) => return Ok(r),
                Fed::Complete(kind, id) => return Ok(deliver(f, kind, buf, id)),
                Fed::More => {}
            }
        }
    }
}

#[cfg(feature = "tokio")]
/// The tokio flavour of [`BlockingFramedStream`]: same framing, same guarantees, over an
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
    stream: crate::SharedMemoryStream,
    tx: SendState,
    rx: RecvState,
}

#[cfg(feature = "tokio")]
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
    /// [`BlockingFramedStream::recv_into`]. Not cancel-safe across fragments either.
    pub async fn recv_into(&mut self, frame: &mut Frame) -> Result<()> {
        self.rx.recv_into_async(self.stream.receiver_mut(), frame).await
    }

    /// Receives the next message and calls `f` with its type, payload and id, in place when the
    /// message fits one record; see [`BlockingFramedStream::recv_with`] (same caveat about untrusted
    /// peers). Not cancel-safe across fragments either.
    pub async fn recv_with<R>(&mut self, f: impl FnOnce(MessageType, &[u8], u64) -> R) -> Result<R> {
        self.rx.recv_with_async(self.stream.receiver_mut(), f).await
    }
}

#[cfg(feature = "tokio")]
impl FramedStream {
    /// Splits the stream so that one task receives while others send (e.g. a server reading
    /// requests while handler tasks answer them through a shared sender).
    pub fn into_split(self) -> (FramedSender, FramedReceiver) {
        let (tx, rx) = self.stream.into_split();
        (FramedSender { sink: tx, state: self.tx }, FramedReceiver { source: rx, state: self.rx })
    }
}

#[cfg(feature = "tokio")]
/// The sending half of a [`FramedStream`] (see [`FramedStream::into_split`]).
#[derive(Debug)]
pub struct FramedSender {
    sink: crate::StreamSender,
    state: SendState,
}

#[cfg(feature = "tokio")]
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

#[cfg(feature = "tokio")]
/// The receiving half of a [`FramedStream`] (see [`FramedStream::into_split`]).
#[derive(Debug)]
pub struct FramedReceiver {
    source: crate::StreamReceiver,
    state: RecvState,
}

#[cfg(feature = "tokio")]
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

/// The first frame error a framed stream met; once set, every call returns it.
#[derive(Default, Debug)]
struct Broken(Option<FrameError>);

impl Broken {
    fn check(&self) -> Result<()> {
        match &self.0 {
            Some(e) => Err(e.clone().into()),
            None => Ok(()),
        }
    }

    /// Passes a step through, remembers an error.
    fn record<T>(&mut self, step: Result<T, FrameError>) -> Result<T> {
        step.map_err(|e| {
            self.0 = Some(e.clone());
            e.into()
        })
    }
}

/// Calls the receive callback on a reassembled message, then gives back the memory of a very
/// large one (the buffer is kept between calls for the common, smaller case).
fn deliver<R, F: FnOnce(MessageType, &[u8], u64) -> R>(
    f: Option<F>,
    kind: MessageType,
    buf: &mut Vec<u8>,
    id: u64,
) -> R {
    let f = f.expect("the callback runs once, for the completed message");
    let r = f(kind, buf, id);
    if buf.capacity() > KEEP_REASSEMBLY_BUF {
        *buf = Vec::new();
    }
    r
}

/// Largest reassembly buffer a stream keeps between messages.
const KEEP_REASSEMBLY_BUF: usize = 1 << 20;

/// One record of a message being sent: header plus a slice of the payload.
pub(crate) struct Fragment<'a> {
    header: [u8; HEADER_LEN],
    part: &'a [u8],
}

impl Fragment<'_> {
    /// Length of the ring record: header and part.
    pub(crate) fn record_len(&self) -> usize {
        HEADER_LEN + self.part.len()
    }

    /// Writes the record into a reservation of exactly `record_len()` bytes.
    pub(crate) fn write(&self, buf: &mut [u8]) -> usize {
        buf[..HEADER_LEN].copy_from_slice(&self.header);
        buf[HEADER_LEN..].copy_from_slice(self.part);
        self.record_len()
    }
}

/// Splits a message into fragments of at most `chunk` payload bytes (one empty fragment for an
/// empty message); refuses it whole if it exceeds `max`.
pub(crate) fn fragments<'a>(
    kind: MessageType,
    id: u64,
    payload: &'a [u8],
    max: usize,
    chunk: usize,
    with_crc: bool,
) -> Result<impl Iterator<Item = Fragment<'a>> + 'a> {
    if payload.len() > max {
        return Err(IpcError::MessageTooLarge { len: payload.len(), max });
    }
    let count = fragment_count(payload.len(), chunk);
    Ok((0..count).map(move |i| fragment_at(kind, id, payload, chunk, i, with_crc)))
}

/// How many fragments a message of `len` bytes makes with `chunk` payload bytes per record.
pub(crate) fn fragment_count(len: usize, chunk: usize) -> usize {
    len.div_ceil(chunk).max(1)
}

/// Fragment `i` of a message (see [`fragments`]), made on its own: a `Sink` writes one
/// fragment per poll, as room allows.
pub(crate) fn fragment_at(
    kind: MessageType,
    id: u64,
    payload: &[u8],
    chunk: usize,
    i: usize,
    with_crc: bool,
) -> Fragment<'_> {
    let part = &payload[(i * chunk).min(payload.len())..((i + 1) * chunk).min(payload.len())];
    let mut header = CanonicalHeader::for_payload(kind, id, part, with_crc);
    if i + 1 < fragment_count(payload.len(), chunk) {
        header.flags = header.flags.with(FrameFlags::MORE_FRAGMENTS);
    }
    Fragment { header: header.encode(), part }
}

/// What one record did to the message being received.
pub(super) enum Fed<R> {
    /// The record was a whole message and the callback ran on it in place.
    InPlace(R),
    /// The last fragment is in: the message (type, id) is in the buffer.
    Complete(MessageType, u64),
    /// More fragments follow.
    More,
}

/// Reassembles one message from its records, validating each (the bytes go to a buffer the
/// caller owns).
pub(super) struct Reassembly {
    max: usize,
    first: Option<CanonicalHeader>,
}

impl Reassembly {
    /// A message of at most `max` bytes.
    pub(super) fn new(max: usize) -> Reassembly {
        Reassembly { max, first: None }
    }

    /// Whether a fragment of the message has come in.
    pub(super) fn started(&self) -> bool {
        self.first.is_some()
    }

    /// The header of `record`, checked against the record's length, this message's limit and
    /// the fragments before it. The CRC is left to the caller.
    fn check(&self, record: &[u8], so_far: usize) -> Result<CanonicalHeader, FrameError> {
        let header = CanonicalHeader::decode(record, u32::MAX)?;
        let part_len = record.len() - HEADER_LEN;
        if part_len != header.payload_len as usize {
            return Err(FrameError::Truncated { needed: header.payload_len as usize, got: part_len });
        }
        if let Some(f) = &self.first {
            if f.message_id != header.message_id || f.msg_type != header.msg_type {
                return Err(FrameError::Interleaved { expected: f.message_id, got: header.message_id });
            }
        }
        let total = so_far + part_len;
        if total > self.max {
            return Err(FrameError::TooLong {
                len: total.min(u32::MAX as usize) as u32,
                max: self.max.min(u32::MAX as usize) as u32,
            });
        }
        Ok(header)
    }

    /// Takes one record, appending its payload to `out` (which holds the fragments so far) and
    /// checking the CRC on that copy; `Ok(Some((type, id)))` once the last fragment is in.
    pub(super) fn feed(
        &mut self,
        record: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Option<(MessageType, u64)>, FrameError> {
        let header = self.check(record, out.len())?;
        let start = out.len();
        out.extend_from_slice(&record[HEADER_LEN..]);
        if let Err(e) = header.verify(&out[start..]) {
            out.truncate(start);
            return Err(e);
        }
        let first = *self.first.get_or_insert(header);
        if header.flags.contains(FrameFlags::MORE_FRAGMENTS) {
            return Ok(None);
        }
        Ok(Some((first.msg_type, first.message_id)))
    }

    /// Like [`feed`](Self::feed), except that a record holding a whole message is checked in
    /// place and handed to `f` (taken out of its option) without a copy.
    pub(super) fn feed_in_place<R, F: FnOnce(MessageType, &[u8], u64) -> R>(
        &mut self,
        record: &[u8],
        out: &mut Vec<u8>,
        f: &mut Option<F>,
    ) -> Result<Fed<R>, FrameError> {
        if self.first.is_none() {
            let header = self.check(record, 0)?;
            if !header.flags.contains(FrameFlags::MORE_FRAGMENTS) {
                let part = &record[HEADER_LEN..];
                header.verify(part)?;
                let f = f.take().expect("the callback runs once");
                return Ok(Fed::InPlace(f(header.msg_type, part, header.message_id)));
            }
        }
        Ok(match self.feed(record, out)? {
            Some((kind, id)) => Fed::Complete(kind, id),
            None => Fed::More,
        })
    }
}
