//! A message as records: cut into fragments on the way out, checked and reassembled on the
//! way in.

use crate::error::{IpcError, Result};
use crate::frame::{CanonicalHeader, FrameError, FrameFlags, MessageType, HEADER_LEN};

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
pub(in crate::frame) enum Fed<R> {
    /// The record was a whole message and the callback ran on it in place.
    InPlace(R),
    /// The last fragment is in: the message (type, id) is in the buffer.
    Complete(MessageType, u64),
    /// More fragments follow.
    More,
}

/// Reassembles one message from its records, validating each (the bytes go to a buffer the
/// caller owns).
pub(in crate::frame) struct Reassembly {
    max: usize,
    first: Option<CanonicalHeader>,
}

impl Reassembly {
    /// A message of at most `max` bytes.
    pub(in crate::frame) fn new(max: usize) -> Reassembly {
        Reassembly { max, first: None }
    }

    /// Whether a fragment of the message has come in.
    pub(in crate::frame) fn started(&self) -> bool {
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
    pub(in crate::frame) fn feed(
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
    pub(in crate::frame) fn feed_in_place<R, F: FnOnce(MessageType, &[u8], u64) -> R>(
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
