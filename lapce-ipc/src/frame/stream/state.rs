//! The state both framed flavours keep per direction: the sending side's settings and ids, the
//! receiving side's reassembly and its first error, and where the blocking flavour's records go.

use std::fmt;

use super::fragment::{fragments, Fed, Reassembly};
use super::DEFAULT_MAX_MESSAGE;
use crate::error::Result;
use crate::frame::{Frame, FrameError, MessageType, HEADER_LEN};
use crate::{BlockingSharedMemoryStream, BlockingStreamReceiver, BlockingStreamSender};

/// Where the blocking framed types write their records.
pub(super) trait RecordSink {
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
pub(super) trait RecordSource {
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
pub(super) struct SendState {
    pub(super) max_message: usize,
    pub(super) with_crc: bool,
    pub(super) next_id: u64,
    /// The frame a `Sink` was given and has not written whole yet, and its next fragment.
    pub(super) queued: Option<(Frame, usize)>,
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
    pub(super) fn fresh_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        id
    }

    /// Sends one message as one or more records, each header and payload part written straight
    /// into the ring.
    pub(super) fn send(
        &self,
        sink: &mut impl RecordSink,
        kind: MessageType,
        id: u64,
        payload: &[u8],
    ) -> Result<()> {
        let chunk = sink.record_limit() - HEADER_LEN;
        for fragment in fragments(kind, id, payload, self.max_message, chunk, self.with_crc)? {
            sink.send_record(fragment.record_len(), |buf| fragment.write(buf))?;
        }
        Ok(())
    }
}

/// Settings and state of the receiving side.
pub(super) struct RecvState {
    pub(super) max_message: usize,
    pub(super) broken: Broken,
    /// Where `recv_with` reassembles fragmented messages (kept between calls, up to
    /// [`KEEP_REASSEMBLY_BUF`]).
    pub(super) reassembly_buf: Vec<u8>,
    /// The message a `Stream` poll is reassembling (its bytes so far in `polled`): kept between
    /// polls, so that the stream is cancel-safe, and taken over by the next receive call.
    pub(super) partial: Option<Reassembly>,
    pub(super) polled: Vec<u8>,
    /// The `Stream` ended (the peer closed, or after the error it yielded).
    pub(super) ended: bool,
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
    pub(super) fn resume(&mut self, payload: &mut Vec<u8>) -> Reassembly {
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
    pub(super) async fn recv_into_async(
        &mut self,
        source: &mut crate::StreamReceiver,
        frame: &mut Frame,
    ) -> Result<()> {
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
    pub(super) async fn recv_with_async<R>(
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

    pub(super) fn recv_into(
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

    pub(super) fn recv_with<R>(
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

/// The first frame error a framed stream met; once set, every call returns it.
#[derive(Default, Debug)]
pub(super) struct Broken(Option<FrameError>);

impl Broken {
    pub(super) fn check(&self) -> Result<()> {
        match &self.0 {
            Some(e) => Err(e.clone().into()),
            None => Ok(()),
        }
    }

    /// Passes a step through, remembers an error.
    pub(super) fn record<T>(&mut self, step: Result<T, FrameError>) -> Result<T> {
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
