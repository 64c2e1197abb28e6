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
    broken: Option<FrameError>,
}

impl FramedShmStream {
    /// Frames `stream` with the defaults: 10 MiB messages, CRC on.
    pub fn new(stream: SharedMemoryStream) -> FramedShmStream {
        FramedShmStream { stream, max_message: DEFAULT_MAX_MESSAGE, with_crc: true, next_id: 1, broken: None }
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
        if payload.len() > self.max_message {
            return Err(IpcError::MessageTooLarge { len: payload.len(), max: self.max_message });
        }
        let chunk = self.stream.max_message_size() - HEADER_LEN;
        let mut parts = payload.chunks(chunk).peekable();
        if payload.is_empty() {
            return self.send_fragment(kind, id, &[], false);
        }
        while let Some(part) = parts.next() {
            self.send_fragment(kind, id, part, parts.peek().is_some())?;
        }
        Ok(())
    }

    fn send_fragment(&mut self, kind: MessageType, id: u64, part: &[u8], more: bool) -> Result<()> {
        let mut header = CanonicalHeader::for_payload(kind, id, part, self.with_crc);
        if more {
            header.flags = header.flags.with(FrameFlags::MORE_FRAGMENTS);
        }
        let len = HEADER_LEN + part.len();
        self.stream.send_with(len, |buf| {
            buf[..HEADER_LEN].copy_from_slice(&header.encode());
            buf[HEADER_LEN..].copy_from_slice(part);
            len
        })?;
        Ok(())
    }

    /// Receives the next message: its type, payload and id.
    pub fn recv(&mut self) -> Result<(MessageType, Vec<u8>, u64)> {
        if let Some(e) = &self.broken {
            return Err(e.clone().into());
        }
        let mut payload = Vec::new();
        let mut first: Option<CanonicalHeader> = None;
        loop {
            let max = self.max_message;
            let received = self.stream.recv_with(|record| -> Result<bool, FrameError> {
                let header = CanonicalHeader::decode(record, u32::MAX)?;
                let part = &record[HEADER_LEN..];
                header.verify(part)?;
                if let Some(f) = &first {
                    if f.message_id != header.message_id || f.msg_type != header.msg_type {
                        return Err(FrameError::Interleaved {
                            expected: f.message_id,
                            got: header.message_id,
                        });
                    }
                }
                let total = payload.len() + part.len();
                if total > max {
                    return Err(FrameError::TooLong {
                        len: total.min(u32::MAX as usize) as u32,
                        max: max as u32,
                    });
                }
                payload.extend_from_slice(part);
                first.get_or_insert(header);
                Ok(header.flags.contains(FrameFlags::MORE_FRAGMENTS))
            })?;
            match received {
                Ok(true) => continue,
                Ok(false) => {
                    let h = first.expect("a fragment was received");
                    return Ok((h.msg_type, payload, h.message_id));
                }
                Err(e) => {
                    self.broken = Some(e.clone());
                    return Err(e.into());
                }
            }
        }
    }
}
