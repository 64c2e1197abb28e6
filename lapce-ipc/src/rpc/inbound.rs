//! [`Inbound`]: the incoming side of a request/response connection, read one frame at a time.
//!
//! Unlike [`FramedReceiver`](crate::frame::FramedReceiver), it keeps a fragmented
//! message's parts between calls, so whoever reads next (another caller, after the first one's
//! answer came or its future was dropped) goes on where the last one stopped; and it never
//! waits inside a read, so reads are synchronous and cancellation can only happen between them.

use bytes::{Bytes, BytesMut};

use crate::channel::RecvHalf;
use crate::error::Result;
use crate::frame::{CanonicalHeader, FrameError, FrameFlags, MessageType, HEADER_LEN};

/// The incoming ring of a connection, with the state of a message being reassembled.
pub(super) struct Inbound {
    rx: RecvHalf,
    max_message: usize,
    /// The first frame error met; the stream cannot resynchronise after one.
    broken: Option<FrameError>,
    partial: Option<Partial>,
    block: PayloadBlock,
}

/// A fragmented message being reassembled: its fragments so far, each checked as it was copied.
struct Partial {
    kind: MessageType,
    id: u64,
    body: BytesMut,
}

/// One whole message: a one-record message is still in the ring, a fragmented one has been
/// reassembled.
pub(super) struct Message<'a> {
    pub(super) kind: MessageType,
    pub(super) id: u64,
    body: Body<'a>,
}

enum Body<'a> {
    /// The record's payload in the ring, not yet checked against its CRC.
    Ring(CanonicalHeader, &'a [u8]),
    /// Reassembled (and checked) fragments.
    Owned(Bytes),
}

impl Message<'_> {
    /// The payload's length.
    pub(super) fn len(&self) -> usize {
        match &self.body {
            Body::Ring(_, bytes) => bytes.len(),
            Body::Owned(bytes) => bytes.len(),
        }
    }

    /// The payload where it lies, checked against its CRC first. With a one-record message that
    /// is the shared mapping itself: a peer that breaks the protocol could change the bytes
    /// after the check (see the crate's guarantees); [`to_bytes`](Self::to_bytes) checks a copy.
    pub(super) fn in_place(&self) -> Result<&[u8], FrameError> {
        match &self.body {
            Body::Ring(header, bytes) => header.verify(bytes).map(|()| *bytes),
            Body::Owned(bytes) => Ok(bytes),
        }
    }

    /// The payload as owned bytes: copied out of the ring once (into `block` when it is small)
    /// and checked on the copy, so what was checked is what the caller gets.
    pub(super) fn to_bytes(&self, block: &mut PayloadBlock) -> Result<Bytes, FrameError> {
        match &self.body {
            Body::Ring(header, bytes) => {
                let copy = block.copy(bytes);
                header.verify(&copy)?;
                Ok(copy)
            }
            Body::Owned(bytes) => Ok(bytes.clone()),
        }
    }
}

/// What one record did.
enum Step<R> {
    /// A message was complete and handed over; the callback's result.
    Delivered(R),
    /// A fragment went into the message being reassembled.
    More,
}

impl Inbound {
    /// Reads messages of at most `max_message` bytes from `rx`.
    pub(super) fn new(rx: RecvHalf, max_message: usize) -> Inbound {
        Inbound { rx, max_message, broken: None, partial: None, block: PayloadBlock::default() }
    }

    /// The ring half, to wait on it.
    pub(super) fn rx(&mut self) -> &mut RecvHalf {
        &mut self.rx
    }

    /// Takes the next whole message if the ring holds one, without waiting: `deliver` gets it
    /// (a one-record message in place, freed when `deliver` returns) together with the block
    /// that small copies go to, and its result is returned. `Ok(None)`: no whole message yet
    /// (the fragments there were are kept for the next call). A frame error, `deliver`'s own
    /// included, breaks the stream for good.
    pub(super) fn try_next<R>(
        &mut self,
        deliver: impl FnOnce(Message<'_>, &mut PayloadBlock) -> Result<R, FrameError>,
    ) -> Result<Option<R>> {
        let mut deliver = Some(deliver);
        loop {
            if let Some(e) = &self.broken {
                return Err(e.clone().into());
            }
            let Inbound { rx, max_message, partial, block, .. } = self;
            let step = rx.try_recv_with(|record| {
                Ok(take_record(record, *max_message, partial, block, &mut deliver))
            })?;
            match step {
                None => return Ok(None),
                Some(Ok(Step::Delivered(r))) => return Ok(Some(r)),
                Some(Ok(Step::More)) => {}
                Some(Err(e)) => {
                    self.broken = Some(e.clone());
                    return Err(e.into());
                }
            }
        }
    }
}

/// Takes one record: a whole message goes to `deliver` (taken out of its option), a fragment
/// into `partial`.
fn take_record<R, F>(
    record: &[u8],
    max: usize,
    partial: &mut Option<Partial>,
    block: &mut PayloadBlock,
    deliver: &mut Option<F>,
) -> Result<Step<R>, FrameError>
where
    F: FnOnce(Message<'_>, &mut PayloadBlock) -> Result<R, FrameError>,
{
    let header = CanonicalHeader::decode(record, u32::MAX)?;
    let part = &record[HEADER_LEN..];
    if part.len() != header.payload_len as usize {
        return Err(FrameError::Truncated { needed: header.payload_len as usize, got: part.len() });
    }
    let more = header.flags.contains(FrameFlags::MORE_FRAGMENTS);
    let so_far = partial.as_ref().map_or(0, |p| p.body.len());
    if so_far + part.len() > max {
        return Err(FrameError::TooLong {
            len: (so_far + part.len()).min(u32::MAX as usize) as u32,
            max: max.min(u32::MAX as usize) as u32,
        });
    }
    if partial.is_none() && !more {
        let deliver = deliver.take().expect("a message is delivered once");
        let message =
            Message { kind: header.msg_type, id: header.message_id, body: Body::Ring(header, part) };
        return deliver(message, block).map(Step::Delivered);
    }
    let p = match partial {
        Some(p) if p.id != header.message_id || p.kind != header.msg_type => {
            return Err(FrameError::Interleaved { expected: p.id, got: header.message_id })
        }
        Some(p) => p,
        None => partial.insert(Partial {
            kind: header.msg_type,
            id: header.message_id,
            body: BytesMut::with_capacity(part.len()),
        }),
    };
    let start = p.body.len();
    p.body.extend_from_slice(part);
    header.verify(&p.body[start..])?;
    if more {
        return Ok(Step::More);
    }
    let done = partial.take().expect("the message being reassembled");
    let deliver = deliver.take().expect("a message is delivered once");
    let message = Message { kind: done.kind, id: done.id, body: Body::Owned(done.body.freeze()) };
    deliver(message, block).map(Step::Delivered)
}

/// Where a connection copies small payloads out of its ring: a block, each payload a shared
/// slice of it (a `Bytes` its receiver owns). When every slice of the block has been dropped
/// (the usual case: a payload is dropped once answered or read), the block is reused, so a small
/// message costs no allocation. If the block is still shared, the next one is twice its size (up
/// to [`PAYLOAD_BLOCK`]). A larger payload gets an allocation of its own.
#[derive(Default)]
pub(super) struct PayloadBlock {
    block: BytesMut,
    /// The current block's size (`block` holds what is left of it).
    size: usize,
}

/// Largest [`PayloadBlock`] block, and the largest payload copied into one.
const PAYLOAD_BLOCK: usize = 1024;

impl PayloadBlock {
    /// A copy of `payload` that the caller owns.
    pub(super) fn copy(&mut self, payload: &[u8]) -> Bytes {
        if payload.is_empty() {
            return Bytes::new();
        }
        if payload.len() > PAYLOAD_BLOCK {
            return Bytes::copy_from_slice(payload);
        }
        if !self.block.try_reclaim(payload.len()) {
            self.size = payload.len().next_multiple_of(64).max((2 * self.size).min(PAYLOAD_BLOCK));
            self.block = BytesMut::with_capacity(self.size);
        }
        self.block.extend_from_slice(payload);
        self.block.split().freeze()
    }
}

#[cfg(test)]
mod tests {
    //! [`take_record`] fed records straight from memory: the messages a fragmenter cuts arrive
    //! whole and intact, in order, one at a time; arbitrary bytes and damaged records are errors,
    //! never a panic or a message longer than the limit.

    use proptest::prelude::*;

    use super::*;
    use crate::frame::fragments;

    /// What one delivered message was: type, id, payload (copied out through `to_bytes`).
    type Delivered = (MessageType, u64, Vec<u8>);

    /// Feeds `records` in order; the messages delivered, or the first error.
    fn feed(records: &[Vec<u8>], max: usize) -> Result<Vec<Delivered>, FrameError> {
        let (mut partial, mut block, mut out) = (None, PayloadBlock::default(), Vec::new());
        for record in records {
            let mut deliver = Some(|msg: Message<'_>, block: &mut PayloadBlock| {
                Ok((msg.kind, msg.id, msg.to_bytes(block)?.to_vec()))
            });
            if let Step::Delivered(m) = take_record(record, max, &mut partial, &mut block, &mut deliver)? {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// The records of one message cut into parts of at most `chunk` bytes.
    fn records(kind: MessageType, id: u64, payload: &[u8], chunk: usize) -> Vec<Vec<u8>> {
        let parts = fragments(kind, id, payload, usize::MAX, chunk, true).unwrap();
        parts
            .map(|f| {
                let mut record = vec![0u8; f.record_len()];
                f.write(&mut record);
                record
            })
            .collect()
    }

    proptest! {
        #[test]
        fn fragmented_messages_arrive_whole_in_order(
            messages in proptest::collection::vec((any::<u16>(), 1u64.., proptest::collection::vec(any::<u8>(), 0..3000)), 1..6),
            chunk in 1usize..700,
        ) {
            let mut all = Vec::new();
            for (kind, id, payload) in &messages {
                all.extend(records(MessageType::from_u16(*kind), *id, payload, chunk));
            }
            let got = feed(&all, 1 << 20).unwrap();
            let want: Vec<Delivered> = messages.iter().map(|(k, id, p)| (MessageType::from_u16(*k), *id, p.clone())).collect();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn arbitrary_records_are_refused_not_trusted(
            records in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..8),
            max in 0usize..300,
        ) {
            // Whatever the bytes, no panic, and nothing over the limit is delivered.
            if let Ok(delivered) = feed(&records, max) {
                prop_assert!(delivered.iter().all(|(_, _, p)| p.len() <= max), "{:?}", delivered);
            }
        }

        #[test]
        fn damaged_fragments_are_errors(
            payload in proptest::collection::vec(any::<u8>(), 2..2000),
            chunk in 1usize..500,
            which in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let mut all = records(MessageType::Data, 7, &payload, chunk);
            // A flipped payload bit of one fragment: its CRC no longer matches.
            let record = which.get_mut(&mut all);
            prop_assume!(record.len() > HEADER_LEN);
            let at = HEADER_LEN + (bit as usize * 31) % (record.len() - HEADER_LEN);
            record[at] ^= 1 << bit;
            let got = feed(&all, 1 << 20);
            prop_assert!(matches!(got, Err(FrameError::CrcMismatch { .. })), "{:?}", got);
        }
    }

    #[test]
    fn a_fragment_of_another_message_inside_one_is_refused() {
        let mut all = records(MessageType::Data, 1, &[1; 100], 40);
        all.insert(1, records(MessageType::Data, 2, &[2; 10], 40).remove(0));
        assert_eq!(feed(&all, 1 << 20), Err(FrameError::Interleaved { expected: 1, got: 2 }));
    }

    #[test]
    fn a_message_over_the_limit_is_refused_as_its_fragments_come() {
        let all = records(MessageType::Data, 1, &[0; 100], 30);
        assert!(matches!(feed(&all, 99), Err(FrameError::TooLong { .. })));
        assert_eq!(feed(&all, 100).unwrap().len(), 1);
    }
}
