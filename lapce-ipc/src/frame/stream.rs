//! [`FramedShmStream`]: typed, identified, checksummed messages of any size (up to a configured
//! maximum) over a [`SharedMemoryStream`](crate::SharedMemoryStream).

use crate::error::{IpcError, Result};
use crate::frame::{CanonicalHeader, FrameError, FrameFlags, MessageType, HEADER_LEN};
use crate::SharedMemoryStream;

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
/// ```
/// use lapce_ipc::frame::{FramedShmStream, MessageType};
/// use lapce_ipc::{SharedMemoryListener, SharedMemoryStream};
///
/// let name = format!("framed-doc-{}", std::process::id());
/// let listener = SharedMemoryListener::bind(&name)?;
/// let client = std::thread::spawn(move || -> lapce_ipc::Result<()> {
///     let mut framed = FramedShmStream::new(SharedMemoryStream::connect(&name)?);
///     let big = vec![7u8; 1 << 20]; // larger than a ring record: sent as fragments
///     framed.send(MessageType::Data, &big)?;
///     Ok(())
/// });
/// let mut framed = FramedShmStream::new(listener.accept()?);
/// let (kind, payload, _id) = framed.recv()?;
/// assert_eq!((kind, payload.len()), (MessageType::Data, 1 << 20));
/// client.join().unwrap()?;
/// # Ok::<(), lapce_ipc::IpcError>(())
/// ```
pub struct FramedShmStream {
    stream: SharedMemoryStream,
    max_message: usize,
    with_crc: bool,
    next_id: u64,
    broken: Broken,
}

impl FramedShmStream {
    /// Frames `stream` with the defaults: 10 MiB messages, CRC on.
    pub fn new(stream: SharedMemoryStream) -> FramedShmStream {
        FramedShmStream {
            stream,
            max_message: DEFAULT_MAX_MESSAGE,
            with_crc: true,
            next_id: 1,
            broken: Broken::default(),
        }
    }

    /// Sets the largest message accepted in either direction (at most `u32::MAX` bytes).
    pub fn with_max_message(mut self, max: usize) -> FramedShmStream {
        self.max_message = max.min(u32::MAX as usize);
        self
    }

    /// Turns the payload CRC off for messages we send (faster; the header is still checked).
    pub fn with_crc(mut self, on: bool) -> FramedShmStream {
        self.with_crc = on;
        self
    }

    /// The largest message, in bytes.
    pub fn max_message_size(&self) -> usize {
        self.max_message
    }

    /// Largest payload that travels as a single ring record (larger ones are fragmented).
    pub fn single_record_limit(&self) -> usize {
        self.stream.max_message_size() - HEADER_LEN
    }

    /// The underlying stream.
    pub fn get_mut(&mut self) -> &mut SharedMemoryStream {
        &mut self.stream
    }

    /// Sends `payload` as a message of type `kind` with a fresh id, which is returned.
    pub fn send(&mut self, kind: MessageType, payload: &[u8]) -> Result<u64> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.send_with_id(kind, id, payload)?;
        Ok(id)
    }

    /// Sends `payload` as a message of type `kind` with the given id (to answer a request).
    pub fn send_with_id(&mut self, kind: MessageType, id: u64, payload: &[u8]) -> Result<()> {
        let chunk = self.stream.max_message_size() - HEADER_LEN;
        for fragment in fragments(kind, id, payload, self.max_message, chunk, self.with_crc)? {
            self.stream.send_with(fragment.record_len(), |buf| fragment.write(buf))?;
        }
        Ok(())
    }

    /// Receives the next message: its type, payload and id.
    pub fn recv(&mut self) -> Result<(MessageType, Vec<u8>, u64)> {
        let mut message = Reassembly::new(self.max_message);
        loop {
            self.broken.check()?;
            let step = self.stream.recv_with(|record| message.feed(record))?;
            if let Some(done) = self.broken.record(step)? {
                return Ok(done);
            }
        }
    }
}

/// The tokio flavour of [`FramedShmStream`]: same framing, same guarantees, over an
/// [`AsyncSharedMemoryStream`](crate::AsyncSharedMemoryStream).
pub struct AsyncFramedShmStream {
    stream: crate::AsyncSharedMemoryStream,
    max_message: usize,
    with_crc: bool,
    next_id: u64,
    broken: Broken,
}

impl AsyncFramedShmStream {
    /// Frames `stream` with the defaults: 10 MiB messages, CRC on.
    pub fn new(stream: crate::AsyncSharedMemoryStream) -> AsyncFramedShmStream {
        AsyncFramedShmStream {
            stream,
            max_message: DEFAULT_MAX_MESSAGE,
            with_crc: true,
            next_id: 1,
            broken: Broken::default(),
        }
    }

    /// Sets the largest message accepted in either direction (at most `u32::MAX` bytes).
    pub fn with_max_message(mut self, max: usize) -> AsyncFramedShmStream {
        self.max_message = max.min(u32::MAX as usize);
        self
    }

    /// Turns the payload CRC off for messages we send.
    pub fn with_crc(mut self, on: bool) -> AsyncFramedShmStream {
        self.with_crc = on;
        self
    }

    /// The underlying stream.
    pub fn get_mut(&mut self) -> &mut crate::AsyncSharedMemoryStream {
        &mut self.stream
    }

    /// Sends `payload` as a message of type `kind` with a fresh id, which is returned.
    pub async fn send(&mut self, kind: MessageType, payload: &[u8]) -> Result<u64> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.send_with_id(kind, id, payload).await?;
        Ok(id)
    }

    /// Sends `payload` as a message of type `kind` with the given id.
    pub async fn send_with_id(&mut self, kind: MessageType, id: u64, payload: &[u8]) -> Result<()> {
        let chunk = self.stream.max_message_size() - HEADER_LEN;
        for fragment in fragments(kind, id, payload, self.max_message, chunk, self.with_crc)? {
            self.stream.send_with(fragment.record_len(), |buf| fragment.write(buf)).await?;
        }
        Ok(())
    }

    /// Receives the next message: its type, payload and id. Not cancel-safe across fragments:
    /// dropping the future in the middle of a fragmented message loses the fragments read so
    /// far.
    pub async fn recv(&mut self) -> Result<(MessageType, Vec<u8>, u64)> {
        let mut message = Reassembly::new(self.max_message);
        loop {
            self.broken.check()?;
            let step = self.stream.recv_with(|record| message.feed(record)).await?;
            if let Some(done) = self.broken.record(step)? {
                return Ok(done);
            }
        }
    }
}

/// The first frame error a framed stream met; once set, every call returns it.
#[derive(Default)]
struct Broken(Option<FrameError>);

impl Broken {
    fn check(&self) -> Result<()> {
        match &self.0 {
            Some(e) => Err(e.clone().into()),
            None => Ok(()),
        }
    }

    /// Passes a finished message through, remembers an error.
    fn record(&mut self, step: Result<Option<Message>, FrameError>) -> Result<Option<Message>> {
        step.map_err(|e| {
            self.0 = Some(e.clone());
            e.into()
        })
    }
}

/// A received message: type, payload, id.
type Message = (MessageType, Vec<u8>, u64);

/// One record of a message being sent: header plus a slice of the payload.
struct Fragment<'a> {
    header: [u8; HEADER_LEN],
    part: &'a [u8],
}

impl Fragment<'_> {
    fn record_len(&self) -> usize {
        HEADER_LEN + self.part.len()
    }

    /// Writes the record into a reservation of exactly `record_len()` bytes.
    fn write(&self, buf: &mut [u8]) -> usize {
        buf[..HEADER_LEN].copy_from_slice(&self.header);
        buf[HEADER_LEN..].copy_from_slice(self.part);
        self.record_len()
    }
}

/// Splits a message into fragments of at most `chunk` payload bytes (one empty fragment for an
/// empty message); refuses it whole if it exceeds `max`.
fn fragments<'a>(
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
    let count = payload.len().div_ceil(chunk).max(1);
    Ok((0..count).map(move |i| {
        let part = &payload[(i * chunk).min(payload.len())..((i + 1) * chunk).min(payload.len())];
        let mut header = CanonicalHeader::for_payload(kind, id, part, with_crc);
        if i + 1 < count {
            header.flags = header.flags.with(FrameFlags::MORE_FRAGMENTS);
        }
        Fragment { header: header.encode(), part }
    }))
}

/// Reassembles one message from its records, validating each.
struct Reassembly {
    max: usize,
    first: Option<CanonicalHeader>,
    payload: Vec<u8>,
}

impl Reassembly {
    fn new(max: usize) -> Reassembly {
        Reassembly { max, first: None, payload: Vec::new() }
    }

    /// Takes one record; `Ok(Some(message))` once the last fragment is in.
    fn feed(&mut self, record: &[u8]) -> Result<Option<Message>, FrameError> {
        let header = CanonicalHeader::decode(record, u32::MAX)?;
        let part = &record[HEADER_LEN..];
        header.verify(part)?;
        if let Some(f) = &self.first {
            if f.message_id != header.message_id || f.msg_type != header.msg_type {
                return Err(FrameError::Interleaved { expected: f.message_id, got: header.message_id });
            }
        }
        let total = self.payload.len() + part.len();
        if total > self.max {
            return Err(FrameError::TooLong {
                len: total.min(u32::MAX as usize) as u32,
                max: self.max as u32,
            });
        }
        self.payload.extend_from_slice(part);
        let first = *self.first.get_or_insert(header);
        if header.flags.contains(FrameFlags::MORE_FRAGMENTS) {
            return Ok(None);
        }
        Ok(Some((first.msg_type, std::mem::take(&mut self.payload), first.message_id)))
    }
}
