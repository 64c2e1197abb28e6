//! [`BlockingFramedStream`]: typed, identified, checksummed messages of any size (up to a configured
//! maximum) over a [`BlockingSharedMemoryStream`](crate::BlockingSharedMemoryStream).

use crate::error::Result;
use crate::frame::{Frame, MessageType, HEADER_LEN};
use crate::{BlockingSharedMemoryStream, BlockingStreamReceiver, BlockingStreamSender};

#[cfg(feature = "tokio")]
mod async_framed;
mod fragment;
mod state;
#[cfg(feature = "tokio")]
mod traits;

#[cfg(feature = "tokio")]
pub use async_framed::{FramedReceiver, FramedSender, FramedStream};
pub(crate) use fragment::fragments;
#[cfg(test)]
pub(super) use fragment::Fed;
pub(super) use fragment::Reassembly;
#[cfg(feature = "tokio")]
use fragment::{fragment_at, fragment_count};
use state::{RecvState, SendState};

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
